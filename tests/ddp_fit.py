"""Fits GRU4Rec (no dropout) on the tiny synthetic data with N processes and writes rank 0's epoch history as JSON.

    python tests/ddp_fit.py DEVICES OUT.json

Run as a script, because Lightning's DDP launcher starts the other ranks by running this same command again.
"""

from __future__ import annotations

import json
import sys

import torch

from tiny import tiny_catalog, tiny_sequences

from dualrec.evaluation.protocols import make_split
from dualrec.models import build_model

# every option that draws randomness during training is off (dropout), so 1 and 2 processes see the same updates
OPTIONS = {"embedding_dim": 8, "hidden": 12, "dropout": 0.0, "max_len": 6, "batch_size": 8, "lr": 0.01,
           "epochs": 3, "targets": "all", "progress": False, "seed": 5}


def main(devices: int, out: str) -> None:
    torch.set_num_threads(1)
    catalog = tiny_catalog()
    split = make_split(tiny_sequences(catalog, n_users=40), "strict")
    model = build_model("gru4rec", dict(OPTIONS, devices=devices, strategy="ddp" if devices > 1 else "auto"))
    model.fit(split.train, catalog, valid=split.valid)
    if model.is_global_zero:
        scores = model.score(model.encode(split.test.histories[:8]))
        with open(out, "w") as fh:
            json.dump({"history": model.history, "scores": scores.tolist()}, fh)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
