"""Maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998): a diversity-aware re-rank of any model's list.

The base model's top ``n_candidates`` are re-ordered greedily: the next item is the candidate ``i`` that maximises

    lambda * rel(i) - (1 - lambda) * max_{j already chosen} sim(i, j)

where ``rel`` is the base score min-max scaled to [0, 1] over the user's candidates (scores of different models live
on different scales; a constant row scales to 0) and ``sim`` is the genre Jaccard of two items (``similarity:
genre``) or the cosine of their Sentence-BERT title embeddings (``title``), the same similarities the intra-list
diversity metrics use. ``lambda = 1`` keeps the base order exactly (ties go to the earlier candidate);
``lambda = 0`` picks, after the base's first item, always the item least like those already chosen. Past
``n_candidates`` the list continues in the base's order. Re-rank a fusion model within its own K candidates
(``n_candidates`` at most its ``n_candidates``): past them its scores only encode Stage 1's order (one unit per
position), which would stretch the scale and squeeze the fused scores' differences.

:func:`mmr_order` works on arrays (vectorised over users, one step per list position), so a trade-off sweep re-ranks
one base ranking for many lambdas; :class:`MMRReranker` (``model.name: mmr``) wraps a saved model for every command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.evaluation.beyond import embedding_similarity, genre_similarity
from dualrec.llm.rerank import SBERTReranker
from dualrec.models.base import ModelConfig, Recommendations, Recommender, load_on_catalog

SIMILARITIES = ("genre", "title")


def scaled(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Min-max scale each row over its valid entries to [0, 1]; a constant row, and every invalid entry, is 0."""
    s = scores.astype(np.float64)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    span = np.where(valid, s, -np.inf).max(axis=1, keepdims=True) - lo
    ok = np.isfinite(span) & (span > 0)
    return np.where(valid & ok, (s - lo) / np.where(ok, span, 1.0), 0.0)


def mmr_order(relevance: np.ndarray, similarity: np.ndarray, lam: float, k: int,
              valid: np.ndarray | None = None) -> np.ndarray:
    """Greedy MMR: for each user, the positions ``[n_users, min(k, N)]`` of the chosen candidates, best first.

    ``relevance`` ``[n_users, N]`` (already on a common scale), ``similarity`` ``[n_users, N, N]`` between the
    candidates, ``valid`` marks real candidates (a short list's padding is never chosen: its position is -1)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"MMR lambda must lie in [0, 1], got {lam}")
    n_users, n = relevance.shape
    valid = np.ones((n_users, n), bool) if valid is None else valid
    chosen = ~valid
    max_sim = np.zeros((n_users, n))
    users = np.arange(n_users)
    out = np.full((n_users, min(k, n)), -1, dtype=np.int64)
    for t in range(out.shape[1]):
        value = lam * relevance - (1.0 - lam) * max_sim if t else relevance.astype(np.float64)
        value = np.where(chosen, -np.inf, value)
        pick = value.argmax(axis=1)
        ok = ~chosen[users, pick]
        out[:, t] = np.where(ok, pick, -1)
        chosen[users, pick] = True
        max_sim = np.maximum(max_sim, similarity[users, pick])
    return out


def rerank(items: Sequence[np.ndarray], scores: Sequence[np.ndarray], catalog: Catalog, lam: float, k: int,
           n_candidates: int, item_vectors: np.ndarray, similarity: str = "genre") -> list[np.ndarray]:
    """MMR over each list's first ``n_candidates`` (original ids and their base scores), then the rest of the list in
    base order, cut to ``k``. ``item_vectors``: the catalog's genre matrix (``genre``) or title embeddings
    (``title``), in catalog row order."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"MMR similarity must be one of {SIMILARITIES}, got {similarity!r}")
    n = max((min(len(r), n_candidates) for r in items), default=0)
    lengths = np.array([min(len(r), n) for r in items], dtype=np.int64)
    valid = np.arange(n)[None, :] < lengths[:, None]
    rows = np.full((len(items), n), -1, dtype=np.int64)
    rel = np.zeros((len(items), n))
    if valid.any():
        rows[valid] = catalog.rows(np.concatenate([np.asarray(r[:n], np.int64) for r in items]))
        rel[valid] = np.concatenate([np.asarray(s[:n], np.float64) for s in scores])
    sim = genre_similarity(rows, item_vectors) if similarity == "genre" else embedding_similarity(rows, item_vectors)
    order = mmr_order(scaled(rel, valid), sim, lam, min(k, n), valid)
    out = []
    for u, r in enumerate(items):
        picked = order[u][order[u] >= 0]
        out.append(np.concatenate([np.asarray(r[:n], np.int64)[picked], np.asarray(r[n:], np.int64)])[:k])
    return out


@dataclass
class MMRConfig(ModelConfig):
    base: str = ""                 # folder of the saved model to re-rank (a run's model/)
    lambda_: float = 0.5           # MMR's lambda: 1 = the base ranking, 0 = diversity alone
    n_candidates: int = 50         # the base's top N that MMR re-orders
    similarity: str = "genre"      # genre (Jaccard of genre sets) | title (Sentence-BERT cosine)


class MMRReranker(Recommender):
    """Any saved model's ranking, re-ordered by MMR. Nothing is trained: ``fit`` loads the base model."""

    name = "mmr"
    config_class = MMRConfig

    def __init__(self, config: MMRConfig | dict | None = None):
        super().__init__(config)
        c: MMRConfig = self.config
        if c.similarity not in SIMILARITIES:
            raise ValueError(f"mmr: similarity must be one of {SIMILARITIES}, got {c.similarity!r}")
        if not 0.0 <= c.lambda_ <= 1.0:
            raise ValueError(f"mmr: lambda_ must lie in [0, 1], got {c.lambda_}")
        self.base: Recommender | None = None
        self._vectors: np.ndarray | None = None

    def _fit(self, train, valid, checkpoint_dir: Path | None) -> None:
        c: MMRConfig = self.config
        if not c.base or not Path(c.base).is_dir():
            raise FileNotFoundError(f"mmr: base must be a saved model folder, got {c.base!r}")
        self.base = load_on_catalog(c.base, self.catalog, "mmr: base model")

    def item_vectors(self) -> np.ndarray:
        if self._vectors is None:
            self._vectors = self.catalog.genre_matrix() if self.config.similarity == "genre" else \
                SBERTReranker().catalog_embeddings(self.catalog)
        return self._vectors

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        c: MMRConfig = self.config
        base = self.base.recommend(histories, max(k, c.n_candidates))
        start = time.perf_counter()
        items = rerank(base.items, base.scores, self.catalog, c.lambda_, k, c.n_candidates, self.item_vectors(),
                       c.similarity)
        timings = {**base.timings, "mmr": time.perf_counter() - start}
        # the score of an MMR list is its position (higher first): MMR's values depend on what came before
        scores = [np.arange(len(r), 0, -1).astype(np.float32) for r in items]
        return Recommendations(items, scores, base.extras, timings)

    def _save(self, path: Path) -> None:
        self.base.save(path / "base")

    def _load(self, path: Path) -> None:
        self.base = Recommender.load(path / "base")
