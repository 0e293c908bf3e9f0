"""Training and inference speed of the paper-table baselines on this machine (figures printed, never asserted).

For each model: fit on the strict training split of ML-1M (shared copy, top-1000 items) with a bounded budget
(neural models: one epoch over ``--windows`` training rows, reported as training rows/s and the projected
seconds per full epoch; SKNN/SLIM/MostPop: the full fit), then time ``recommend(k=20)`` over ``--users`` held-out
histories in batches of 256 (users/s).

    python bench/bench_baselines.py --data-dir ../shared/data \\
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat [--models sknn,gru4rec] [--windows 20000]
"""

from __future__ import annotations

import argparse
import time

import torch

from dualrec.config import ExperimentConfig
from dualrec.evaluation.evaluator import recommend_in_batches
from dualrec.evaluation.protocols import make_split
from dualrec.experiment import load_dataset
from dualrec.models import build_model
from dualrec.models.neural import NeuralRecommender

MODELS = ["mostpop", "sknn", "slim", "fpmc", "gru4rec", "narm", "stamp", "sasrec"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--ratings", default="../shared/data/ml-1m-ratings-head/ratings.dat")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--windows", type=int, default=20000, help="training rows timed per neural model")
    ap.add_argument("--users", type=int, default=2000, help="held-out histories timed at inference")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ExperimentConfig.from_dict({"data": {"name": "ml-1m", "data_dir": args.data_dir, "ratings": args.ratings}})
    dataset = load_dataset(cfg)
    split = make_split(dataset.sequences(), "strict")
    histories = split.test.histories[: args.users]
    print(f"data {dataset.name} ({dataset.fingerprint()}), {len(dataset.catalog)} items, "
          f"{len(split.train)} training users, torch threads {torch.get_num_threads()}")
    print("| model | fit s (budget) | train rows/s | projected s/epoch (all rows) | inference users/s |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = build_model(name)
        neural = isinstance(model, NeuralRecommender)
        if neural:
            model = build_model(name, {"epochs": 1, "max_windows": args.windows, "progress": False})
        model.fit(split.train, dataset.catalog)
        recommend_in_batches(model, histories[:256], 20, progress=False)   # warm-up
        start = time.perf_counter()
        recommend_in_batches(model, histories, 20, 256, progress=False)
        users_per_s = len(histories) / (time.perf_counter() - start)
        if neural:
            row = model.history[-1]
            model.config.max_windows = None
            all_rows = len(model.training_windows(split.train)[1])
            print(f"| {name} | {model.fit_seconds:.1f} ({args.windows} rows) | {row['rows_per_s']:.0f} | "
                  f"{all_rows / row['rows_per_s']:.0f} | {users_per_s:.0f} |")
        else:
            print(f"| {name} | {model.fit_seconds:.1f} (full) | - | - | {users_per_s:.0f} |")


if __name__ == "__main__":
    main()
