"""One evaluation path for every model: rank, score, count, time. It never looks at which model it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.evaluation.beyond import DIVERSITY_KS, ItemStats
from dualrec.evaluation.metrics import first_hit_ranks, genre_jaccard, ranking_metrics
from dualrec.evaluation.protocols import EvalCases
from dualrec.models.base import Recommendations, Recommender

DEFAULT_KS = (1, 5, 10, 20)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    counts: dict[str, int]
    timings: dict[str, float]
    recommendations: Recommendations = field(repr=False)
    cases: EvalCases = field(repr=False)
    ranks: np.ndarray = field(repr=False)   # each case's 0-based first-hit rank within max(ks), or MISS
    notes: dict[str, str] = field(default_factory=dict)   # metrics left out, and why

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "counts": self.counts, "timings": self.timings, "metric_notes": self.notes}


def recommend_in_batches(model: Recommender, histories: Sequence[np.ndarray], k: int, batch_size: int = 256,
                         progress: bool = True, desc: str = "recommend") -> Recommendations:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(histories), desc=desc, unit="user", disable=not progress, leave=False) as bar:
        for lo in range(0, len(histories), batch_size):
            parts.append(model.recommend(histories[lo:lo + batch_size], k))
            bar.update(len(parts[-1]))
    return Recommendations.concat(parts)


def list_metrics(items: Sequence[np.ndarray], cases: EvalCases, catalog: Catalog, ks: Sequence[int] = DEFAULT_KS,
                 stats: ItemStats | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Every metric of ranked lists ``items`` (original ids, one list per case): accuracy (HR, NDCG, MRR), the top-1
    genre Jaccard and, at k = 10 and 20 (those within ``max(ks)``), the beyond-accuracy metrics of
    :mod:`dualrec.evaluation.beyond` (``stats`` defaults to the catalog's genres alone). Also the first-hit ranks."""
    stats = stats or ItemStats.of(catalog)
    max_k = max(ks)
    ranks = first_hit_ranks(items, cases.targets, max_k)
    metrics = ranking_metrics(ranks, ks)

    has_top1 = np.array([len(r) > 0 for r in items], dtype=bool)
    top1 = np.array([r[0] if len(r) else catalog.ids[0] for r in items], dtype=np.int64)
    n_t = max((len(t) for t in cases.targets), default=1)
    gm = stats.genres
    tgt_rows = np.full((len(cases), n_t), -1, dtype=np.int64)   # each case's known targets first, in order
    flat = np.concatenate([np.asarray(t, np.int64) for t in cases.targets]) if len(cases) else np.zeros(0, np.int64)
    case = np.repeat(np.arange(len(cases)), [len(t) for t in cases.targets])
    known = catalog.has(flat)
    case = case[known]
    tgt_rows[case, np.arange(len(case)) - np.searchsorted(case, case)] = catalog.rows(flat[known])
    tgt_genres = np.where((tgt_rows >= 0)[..., None], gm[np.maximum(tgt_rows, 0)], 0.0)
    metrics.update(genre_jaccard(gm[catalog.rows(top1)], tgt_genres, has_top1))

    lengths = [min(len(r), max_k) for r in items]
    flat = catalog.rows(np.concatenate([np.asarray(r, np.int64)[:max_k] for r in items])) if sum(lengths) else \
        np.zeros(0, np.int64)
    rows = np.split(flat, np.cumsum(lengths)[:-1]) if len(items) else []
    metrics.update(stats.metrics(rows, [k for k in DIVERSITY_KS if k <= max_k]))
    return metrics, ranks


def evaluate(model: Recommender, cases: EvalCases, catalog: Catalog, ks: Sequence[int] = DEFAULT_KS,
             batch_size: int = 256, progress: bool = True, stats: ItemStats | None = None) -> EvalResult:
    """Score ``model`` on ``cases``: every case counted, none sampled; lists shorter than k just miss. ``stats``
    (training popularity, title embeddings) enables novelty, the tail share and the title diversity."""
    stats = stats or ItemStats.of(catalog)
    max_k = max(ks)
    start = time.perf_counter()
    recs = recommend_in_batches(model, cases.histories, max_k, batch_size, progress, desc=f"evaluate {model.name}")
    seconds = time.perf_counter() - start
    metrics, ranks = list_metrics(recs.items, cases, catalog, ks, stats)

    n = len(cases)
    lengths = np.array([len(r) for r in recs.items])
    counts = {"users": n, "lists_shorter_than_max_k": int((lengths < max_k).sum()),
              "empty_lists": int((lengths == 0).sum())}
    if recs.extras is not None:
        generated = sum(e.get("generated", 0) for e in recs.extras)
        ungrounded = sum(e.get("ungrounded", 0) for e in recs.extras)
        counts.update(generated_titles=generated, ungrounded_titles=ungrounded,
                      fallbacks=sum(int(e.get("fallback", False)) for e in recs.extras))
        ambiguous = sum(e.get("ambiguous", 0) for e in recs.extras)
        if ambiguous:  # real titles naming several catalog films: neither ranked nor hallucinated
            counts["ambiguous_titles"] = ambiguous
        metrics["hallucination_rate"] = ungrounded / generated if generated else 0.0
        answered = [bool(e["answered"]) for e in recs.extras if "answered" in e]
        if answered:   # coverage: the share of users the LLM answered with at least one real item
            counts["llm_answered"] = int(sum(answered))
            metrics["coverage"] = sum(answered) / max(n, 1)
    timings = {"total_s": seconds, "s_per_user": seconds / max(n, 1),
               **{f"stage_{k}_s_per_user": v / max(n, 1) for k, v in recs.timings.items()}}
    return EvalResult(metrics, counts, timings, recs, cases, ranks, dict(stats.notes))
