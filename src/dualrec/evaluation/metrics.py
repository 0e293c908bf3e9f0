"""Ranking metrics over ranked item lists and (one or several) ground-truth items per user.

All metrics derive from one number per user: the 0-based rank of the first recommended item that is a ground-truth
item (or "miss"). With one target (the ``strict`` protocol) these are the usual HR@k, NDCG@k and MRR; with several
targets (the ``paper`` protocol) they are the DUALRec authors' "any of the top k hits any of the targets" and
"NDCG of the first hit". A list shorter than k simply has fewer chances to hit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MISS = -1


def pad_rows(rows: Sequence[np.ndarray], width: int, fill: int) -> np.ndarray:
    """Ragged rows -> ``[len(rows), width]``, cut at ``width`` and filled with ``fill`` after a short row."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.int64)[:width]
        out[i, : len(r)] = r
    return out


def first_hit_ranks(recommended: Sequence[np.ndarray], targets: Sequence[np.ndarray], max_k: int) -> np.ndarray:
    """0-based rank of the first item in the top ``max_k`` that is any target, or :data:`MISS`; vectorised."""
    if len(recommended) != len(targets):
        raise ValueError(f"{len(recommended)} ranked lists for {len(targets)} users")
    width_t = max((len(t) for t in targets), default=1) or 1
    recs = pad_rows(recommended, max_k, fill=-1)
    tgts = pad_rows(targets, width_t, fill=-2)
    hits = (recs[:, :, None] == tgts[:, None, :]).any(axis=2)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), MISS)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """HR@k, NDCG@k (1/log2(rank+2) of the first hit, 0 beyond k) and MRR@max(k) from :func:`first_hit_ranks`."""
    ranks = np.asarray(ranks)
    n = max(len(ranks), 1)
    hit = ranks != MISS
    gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    out: dict[str, float] = {}
    for k in sorted(ks):
        within = hit & (ranks < k)
        out[f"HR@{k}"] = float(within.sum() / n)
        out[f"NDCG@{k}"] = float(np.where(within, gain, 0.0).sum() / n)
    kmax = max(ks)
    out[f"MRR@{kmax}"] = float(np.where(hit & (ranks < kmax), 1.0 / (np.where(hit, ranks, 0) + 1.0), 0.0).sum() / n)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard similarity of two multi-hot matrices (0 where both rows are empty)."""
    inter = np.minimum(a, b).sum(axis=-1)
    union = np.maximum(a, b).sum(axis=-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def genre_jaccard(top1_genres: np.ndarray, target_genres: np.ndarray, has_top1: np.ndarray) -> dict[str, float]:
    """Genre Jaccard of each user's top-1 item against the next item (``target_genres[:, 0]``) and, as the
    authors' code does, the best over all targets. ``target_genres``: ``[n_users, n_targets, n_genres]``;
    users with no recommendation (``has_top1`` false) score 0."""
    n = max(len(top1_genres), 1)
    per_target = jaccard(top1_genres[:, None, :], target_genres)
    per_target = np.where(has_top1[:, None], per_target, 0.0)
    return {"genre_jaccard": float(per_target[:, 0].sum() / n),
            "genre_jaccard_best": float(per_target.max(axis=1).sum() / n)}
