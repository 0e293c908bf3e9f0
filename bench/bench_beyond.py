"""What the beyond-accuracy metrics and MMR cost next to ranking itself (figures printed, never asserted).

On a saved run's strict test users: the time of the model's ``recommend(k=20)`` over every user, of the accuracy
metrics alone, of the evaluator's metrics without popularity and title embeddings (coverage, Gini, genre diversity)
and with every beyond-accuracy metric, and of one MMR re-rank of the top 20; each the best of ``--repeats``.

    OMP_NUM_THREADS=1 python bench/bench_beyond.py --run runs/lstm-all-strict --data-dir ../shared/data \\
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from dualrec import experiment as ex
from dualrec.evaluation.beyond import ItemStats
from dualrec.evaluation.evaluator import list_metrics, recommend_in_batches
from dualrec.evaluation.metrics import first_hit_ranks, ranking_metrics
from dualrec.models.mmr import rerank


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/lstm-all-strict")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--ratings", default="../shared/data/ml-1m-ratings-head/ratings.dat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, model = ex.load_run(args.run, args.data_dir, args.ratings)
    prepared = ex.prepare(cfg)
    cases, catalog, ks = prepared.split.test, prepared.dataset.catalog, cfg.evaluation.ks
    full = ex.item_stats(cfg, prepared)
    genres_only = ItemStats(full.genres)
    recs = recommend_in_batches(model, cases.histories, max(ks), progress=False)
    t_rank = best_of(args.repeats, lambda: recommend_in_batches(model, cases.histories, max(ks), progress=False))
    t_accuracy = best_of(args.repeats, lambda: ranking_metrics(first_hit_ranks(recs.items, cases.targets, max(ks)), ks))
    t_plain = best_of(args.repeats, lambda: list_metrics(recs.items, cases, catalog, ks, genres_only))
    t_full = best_of(args.repeats, lambda: list_metrics(recs.items, cases, catalog, ks, full))
    t_mmr = best_of(args.repeats, lambda: rerank(recs.items, recs.scores, catalog, 0.5, max(ks), max(ks),
                                                 full.genres))
    print(f"{len(cases)} users, {len(catalog)} items, load average {os.getloadavg()[0]:.1f}")
    print(f"recommend(k={max(ks)}):                         {t_rank:.3f} s")
    print(f"accuracy metrics alone (HR, NDCG, MRR):          {t_accuracy:.3f} s")
    print(f"evaluator metrics, no popularity, no titles:     {t_plain:.3f} s")
    print(f"evaluator metrics, every beyond-accuracy one:    {t_full:.3f} s  ({t_full / t_rank:.2f} x ranking)")
    print(f"MMR re-rank of the top {max(ks)} (lambda 0.5, genre): {t_mmr:.3f} s  ({t_mmr / t_rank:.2f} x ranking)")


if __name__ == "__main__":
    main()
