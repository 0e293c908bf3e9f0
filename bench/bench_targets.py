"""Training throughput of the one loop, ``targets=last`` vs ``targets=all``: the Stage-1 LSTM and every neural
model of the paper table, each with its table settings (configs/paper-table.yaml) and in each mode it supports.

Each (model, mode) trains one epoch through the real loop (:mod:`dualrec.models.training`) on a seeded sample of
``--rows`` training rows of the strict split (ML-1M shared copy, top-1000 items), then prints rows/s (a row is a
window in ``last`` mode and a chunk of ``max_len`` positions in ``all`` mode: the "sequences" of one batch),
target items/s, and the seconds one full epoch of that mode takes at that rate. Prints figures; asserts nothing.

    OMP_NUM_THREADS=1 python bench/bench_targets.py --data-dir ../shared/data \\
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat [--rows 2000] [--threads 1] [--models lstm,sasrec]
"""

from __future__ import annotations

import argparse
import platform

import torch

from dualrec.benchmark import ENTRY_KEYS, BenchmarkConfig
from dualrec.config import ExperimentConfig
from dualrec.data.windows import IGNORE
from dualrec.evaluation.protocols import make_split
from dualrec.experiment import load_dataset
from dualrec.models import build_model, get_model_class

# the Stage-1 LSTM (its every-position run's settings) and the paper table's neural models; DUIP needs its LM
MODELS = ["lstm", "fpmc", "gru4rec", "narm", "stamp", "sasrec", "unisrec", "gcegnn", "hide", "mcprn", "attenmixer"]
LSTM = {"batch_size": 32, "max_len": 30}
LOOP_KEYS = ("epochs", "patience", "targets", "max_windows")   # set here, not by the table entry


def table_options(config: str) -> dict[str, dict]:
    """Each model's options in the paper-table config, less the keys of the loop this benchmark sets."""
    return {m["name"]: {k: v for k, v in m.items() if k not in ENTRY_KEYS + LOOP_KEYS}
            for m in BenchmarkConfig.load(config).models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--ratings", default="../shared/data/ml-1m-ratings-head/ratings.dat")
    ap.add_argument("--rows", type=int, default=2000, help="training rows timed per (model, mode)")
    ap.add_argument("--config", default="configs/paper-table.yaml", help="where each model's settings come from")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = ExperimentConfig.from_dict({"data": {"name": "ml-1m", "data_dir": args.data_dir, "ratings": args.ratings}})
    dataset = load_dataset(cfg)
    split = make_split(dataset.sequences(), "strict")
    print(f"data {dataset.name} ({dataset.fingerprint()}), {len(dataset.catalog)} items, {len(split.train)} "
          f"training users; {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| model | targets | max_len | rows/epoch | targets/epoch | rows/s | target items/s | s/epoch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    settings = dict(table_options(args.config), lstm=LSTM)
    runs = [(name, targets) for name in args.models.split(",") for targets in get_model_class(name).target_modes]
    for name, targets in runs:
        options = {**settings.get(name, {}), "targets": targets, "epochs": 1, "progress": False}
        if name == "lstm" and targets == "all":
            options["min_len"] = 1   # every position with an item before it (the `last` recipe needs 30)
        full = build_model(name, options)
        full.catalog = dataset.catalog
        x, y = full.training_windows(split.train)
        n_targets = int((y != IGNORE).sum())
        model = build_model(name, dict(options, max_windows=args.rows)).fit(split.train, dataset.catalog)
        row = model.history[-1]
        print(f"| {name} | {targets} | {model.config.max_len} | {len(x):,} | {n_targets:,} | "
              f"{row['rows_per_s']:,.0f} | {row['targets_per_s']:,.0f} | {len(x) / row['rows_per_s']:,.0f} |",
              flush=True)
        del x, y


if __name__ == "__main__":
    main()
