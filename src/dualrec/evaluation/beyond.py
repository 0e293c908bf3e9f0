"""Beyond-accuracy metrics of the top-k lists: how much of the catalog is shown, how evenly, how varied each list is,
and how far from the popular head it reaches.

Every function takes the top-k matrix ``rows`` ``[n_users, k]`` of catalog rows (``-1`` pads a list shorter than k)
and is vectorised over it. Definitions (docs/protocols.md, "Beyond accuracy", gives each formula and its source):

* catalog coverage: distinct items recommended to anyone / catalog size;
* Gini index of item exposure (how often each catalog item appears over all lists, zeros included);
* intra-list diversity: each list's mean pairwise distance, averaged over lists with two or more items; the genre
  distance is ``1 - Jaccard`` of the genre sets, the title distance ``1 - cosine`` of normalised title embeddings;
* novelty: each list's mean self-information ``-log2 p(i)``, ``p(i)`` the share of training users who have item i
  (one pseudo-user is added to numerator and denominator so an item no training user has stays finite);
* tail share: each list's share of items outside the training top-``head`` (by training users, ties by catalog row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences
from dualrec.evaluation.metrics import pad_rows

PAD = -1
DIVERSITY_KS = (10, 20)
HEAD_SIZE = 100


def top_rows(rows: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Ragged lists of catalog rows -> ``[n_users, k]``, :data:`PAD` after a short list."""
    return pad_rows(rows, k, PAD)


def exposure(rows: np.ndarray, n_items: int) -> np.ndarray:
    """How many lists show each catalog row: ``[n_items]``."""
    valid = rows[rows != PAD]
    return np.bincount(valid, minlength=n_items).astype(np.int64)


def catalog_coverage(rows: np.ndarray, n_items: int) -> float:
    return float((exposure(rows, n_items) > 0).sum() / n_items)


def gini(rows: np.ndarray, n_items: int) -> float:
    """``G = sum_j (2j - n - 1) c_(j) / (n sum_j c_j)`` over exposures sorted ascending (j = 1..n): 0 when every item
    is shown equally often, ``1 - 1/n`` when one item takes every slot; 0 for no recommendation at all."""
    c = np.sort(exposure(rows, n_items)).astype(np.float64)
    total = c.sum()
    if total == 0:
        return 0.0
    j = np.arange(1, n_items + 1)
    return float(((2 * j - n_items - 1) * c).sum() / (n_items * total))


def mean_pairwise(similarity: np.ndarray, rows: np.ndarray) -> float:
    """Mean over lists of the mean pairwise distance ``1 - similarity`` among a list's items (``similarity``:
    ``[n_users, k, k]`` between its slots); a list of fewer than two items has no pair and is left out (the
    evaluator counts short and empty lists)."""
    valid = rows != PAD
    pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(rows.shape[1], dtype=bool)[None]
    n_pairs = pair.sum(axis=(1, 2))
    has = n_pairs > 0
    per_list = np.where(pair, 1.0 - similarity, 0.0).sum(axis=(1, 2)) / np.maximum(n_pairs, 1)
    return float(per_list[has].mean()) if has.any() else 0.0


def genre_similarity(rows: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """Jaccard of the genre sets of every pair of slots: ``[n_users, k, k]`` (0 where both sets are empty)."""
    g = genres[np.maximum(rows, 0)].astype(np.float32, copy=False)
    inter = g @ g.transpose(0, 2, 1)
    size = g.sum(axis=2)
    union = size[:, :, None] + size[:, None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def embedding_similarity(rows: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine of the (L2-normalised) embeddings of every pair of slots: ``[n_users, k, k]``."""
    e = embeddings[np.maximum(rows, 0)].astype(np.float32, copy=False)
    return e @ e.transpose(0, 2, 1)


def training_users(train: Sequences, catalog: Catalog) -> np.ndarray:
    """Training users who have each catalog row: ``[len(catalog)]`` (a repeated item counts once per user; items
    outside the catalog are not counted)."""
    user = np.repeat(np.arange(len(train)), np.diff(train.offsets))
    keep = catalog.has(train.items)
    pairs = np.unique(np.stack([user[keep], catalog.rows(train.items[keep])]), axis=1)
    return np.bincount(pairs[1], minlength=len(catalog)).astype(np.int64)


def per_list_mean(values: np.ndarray, rows: np.ndarray) -> float:
    """Mean over non-empty lists of each list's mean of ``values[row]``."""
    valid = rows != PAD
    n = valid.sum(axis=1)
    per = np.where(valid, values[np.maximum(rows, 0)], 0.0).sum(axis=1) / np.maximum(n, 1)
    return float(per[n > 0].mean()) if (n > 0).any() else 0.0


def self_information(users_per_item: np.ndarray, n_users: int) -> np.ndarray:
    """``-log2((n_i + 1) / (n_users + 1))`` per catalog row."""
    return -np.log2((users_per_item + 1.0) / (n_users + 1.0))


def head_items(users_per_item: np.ndarray, head: int = HEAD_SIZE) -> np.ndarray:
    """Boolean ``[n_items]``: the ``head`` rows most training users have (ties: the lower catalog row)."""
    order = np.lexsort((np.arange(len(users_per_item)), -users_per_item))
    out = np.zeros(len(users_per_item), dtype=bool)
    out[order[:head]] = True
    return out


def beyond_accuracy(rows: Sequence[np.ndarray], n_items: int, genres: np.ndarray, ks: Sequence[int] = DIVERSITY_KS,
                    users_per_item: np.ndarray | None = None, n_train_users: int = 0,
                    title_embeddings: np.ndarray | None = None, head: int = HEAD_SIZE) -> dict[str, float]:
    """Every beyond-accuracy metric at each k: ``catalog_coverage@k``, ``gini@k``, ``ild_genre@k``,
    ``ild_title@k`` (with ``title_embeddings``), ``novelty@k`` and ``tail_share@k`` (with ``users_per_item``)."""
    out: dict[str, float] = {}
    info = self_information(users_per_item, n_train_users) if users_per_item is not None else None
    tail = (~head_items(users_per_item, head)).astype(np.float64) if users_per_item is not None else None
    for k in ks:
        top = top_rows(rows, k)
        out[f"catalog_coverage@{k}"] = catalog_coverage(top, n_items)
        out[f"gini@{k}"] = gini(top, n_items)
        out[f"ild_genre@{k}"] = mean_pairwise(genre_similarity(top, genres), top)
        if title_embeddings is not None:
            out[f"ild_title@{k}"] = mean_pairwise(embedding_similarity(top, title_embeddings), top)
        if info is not None:
            out[f"novelty@{k}"] = per_list_mean(info, top)
            out[f"tail_share@{k}"] = per_list_mean(tail, top)
    return out


@dataclass
class ItemStats:
    """What the beyond-accuracy metrics know about the catalog, computed once per split: genres, training
    popularity (for novelty and the tail share) and title embeddings (for the title diversity). ``notes`` says
    which metric cannot be computed and why, so a record shows it instead of silently lacking it."""

    genres: np.ndarray
    users_per_item: np.ndarray | None = None
    n_train_users: int = 0
    title_embeddings: np.ndarray | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, catalog: Catalog, train: Sequences | None = None, title_embeddings: np.ndarray | None = None,
           title_note: str = "no title embeddings given") -> "ItemStats":
        notes = {}
        if train is None:
            notes["novelty, tail_share"] = "not computed: no training split given"
        if title_embeddings is None:
            notes["ild_title"] = f"not computed: {title_note}"
        elif len(title_embeddings) != len(catalog):
            raise ValueError(f"{len(title_embeddings)} title embeddings for a catalog of {len(catalog)} items")
        return cls(catalog.genre_matrix(), training_users(train, catalog) if train is not None else None,
                   len(train) if train is not None else 0, title_embeddings, notes)

    def metrics(self, rows: Sequence[np.ndarray], ks: Sequence[int] = DIVERSITY_KS) -> dict[str, float]:
        return beyond_accuracy(rows, len(self.genres), self.genres, ks, self.users_per_item, self.n_train_users,
                               self.title_embeddings)
