"""Paired bootstrap of a metric difference between two models scored on the same users.

Two rankings of the same test users give per-user values of a metric (NDCG@k, HR@k from each user's first-hit rank);
their per-user difference is resampled with replacement (the same resampled users for both models: paired), and
the 2.5th and 97.5th percentiles of the mean difference over the resamples give the 95 % interval (the percentile
bootstrap; Efron & Tibshirani 1993, ch. 13). An interval that excludes 0 is a difference this test set supports;
one that straddles 0 is not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dualrec.evaluation.metrics import MISS


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user value of ``HR@k`` or ``NDCG@k`` from 0-based first-hit ranks (:data:`MISS` for none)."""
    name, _, k = metric.partition("@")
    if not k.isdigit() or name not in ("HR", "NDCG"):
        raise ValueError(f"per-user metric must be HR@k or NDCG@k, got {metric!r}")
    ranks = np.asarray(ranks)
    within = (ranks != MISS) & (ranks < int(k))
    if name == "HR":
        return within.astype(np.float64)
    return np.where(within, 1.0 / np.log2(np.where(within, ranks, 0) + 2.0), 0.0)


def bootstrap_interval(diff: np.ndarray, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile interval of the mean of per-user differences ``diff`` over resampled users."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(np.asarray(diff, np.float64)[idx].mean(axis=1), [tail, 100.0 - tail])
    return float(lo), float(hi)


def paired_bootstrap(ranks_a: np.ndarray, ranks_b: np.ndarray, metrics: Sequence[str] = ("NDCG@10", "HR@10"),
                     n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Interval of ``metric(a) - metric(b)`` for each metric: ``{"delta_M": [lo, hi]}`` plus the observed
    differences under ``"delta"``. ``ranks_a[i]`` and ``ranks_b[i]`` must be the same user's."""
    ranks_a, ranks_b = np.asarray(ranks_a), np.asarray(ranks_b)
    if ranks_a.shape != ranks_b.shape or ranks_a.ndim != 1 or not len(ranks_a):
        raise ValueError(f"paired bootstrap needs two equal-length rank vectors, got {ranks_a.shape} and "
                         f"{ranks_b.shape}")
    out: dict = {"delta": {}, "n_users": int(len(ranks_a)), "n_resamples": n_resamples, "level": level}
    for m in metrics:
        d = per_user(ranks_a, m) - per_user(ranks_b, m)
        out[f"delta_{m}"] = list(bootstrap_interval(d, n_resamples, level, seed))
        out["delta"][m] = float(d.mean())
    return out
