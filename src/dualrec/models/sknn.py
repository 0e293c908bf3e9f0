"""SKNN, session-based k-nearest neighbours (Jannach & Ludewig, RecSys 2017), on user sequences.

The paper's method: for the current session ``s``, take the ``k`` past sessions most similar to it (cosine
similarity of binary item vectors), and score an item by the summed similarity of the neighbours that contain it,
``score(i, s) = sum_{n in N_k(s)} sim(s, n) * 1[i in n]``. Here a "past session" is a training user's sequence
(the ``paper`` protocol's test users are new, the ``strict`` ones have their training prefix among the
neighbours, contributing only items of their own history, which are masked anyway).

Options from the same authors' follow-up (Ludewig & Jannach 2018, "Evaluation of session-based recommendation
algorithms"): ``weighting="linear"`` is V-SKNN's linear decay of the current history's items by position (the most
recent counts 1, the ``last_n``-th most recent ``1/last_n``), and ``last_n`` limits the query to the most recent
items (ML-1M histories are hundreds of items long; sessions in the paper are a few clicks). ``sample_size`` keeps
only the ``sample_size`` most recently active training users as candidates (the paper's recency sampling).

Items no neighbour holds all score 0; ties are broken by training popularity (a 1e-6-scaled term), so lists are
deterministic and always full. Everything is sparse-matrix algebra: one ``H X^T`` product per batch of
histories, a batched top-k over neighbours, one ``S X`` product back to items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

from dualrec.data.dataset import Sequences
from dualrec.models.base import ModelConfig, ScoringRecommender


@dataclass
class SKNNConfig(ModelConfig):
    k: int = 100                 # neighbours (paper: 100 or 500)
    sample_size: int | None = None   # candidate neighbours: the most recently active users; None keeps all
    weighting: str = "none"      # none (SKNN) | linear (V-SKNN position decay of the query)
    last_n: int | None = None    # query with the most recent n items only; None uses the whole history

    def __post_init__(self):
        if self.weighting not in ("none", "linear"):
            raise ValueError(f"sknn: weighting must be 'none' or 'linear', got {self.weighting!r}")


class SKNN(ScoringRecommender):
    name = "sknn"
    config_class = SKNNConfig

    def _fit(self, train: Sequences, valid, checkpoint_dir: Path | None) -> None:
        c: SKNNConfig = self.config
        users = np.arange(len(train))
        if c.sample_size and c.sample_size < len(train):
            last_time = np.where(train.lengths > 0, train.times[np.maximum(train.offsets[1:] - 1, 0)], -1)
            users = np.sort(np.argsort(-last_time, kind="stable")[: c.sample_size])
        known = self.catalog.has(train.items)
        owner = np.repeat(np.arange(len(train)), train.lengths)
        keep = known & np.isin(owner, users)
        rows = np.searchsorted(users, owner[keep])
        self._set_neighbours(rows, self.catalog.rows(train.items[keep]), len(users))

    def _set_neighbours(self, user_rows: np.ndarray, item_rows: np.ndarray, n_users: int) -> None:
        """Binary user x item matrix of the candidate neighbours, with its row norms and item popularity."""
        x = sp.csr_matrix((np.ones(len(item_rows), np.float32), (user_rows, item_rows)),
                          shape=(n_users, len(self.catalog)))
        x.data[:] = 1.0                                   # repeated items count once (binary vectors)
        self.neighbours = x
        self.neighbour_norms = np.sqrt(np.asarray(x.sum(1)).ravel()).astype(np.float32)
        pop = np.asarray(x.sum(0)).ravel().astype(np.float32)
        self.tie_break = 1e-6 * pop / max(pop.max(), 1.0)

    def _query(self, histories: list[np.ndarray]):
        c: SKNNConfig = self.config
        hs = [h[-c.last_n:] if c.last_n else h for h in histories]
        lengths = np.array([len(h) for h in hs])
        cols = np.concatenate(hs) if len(hs) else np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(hs)), lengths)
        if c.weighting == "linear":   # V-SKNN: position p of m (1 = oldest) weighs p / m
            pos = np.arange(len(cols)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
            vals = (pos / np.repeat(np.maximum(lengths, 1), lengths)).astype(np.float32)
        else:
            vals = np.ones(len(cols), np.float32)
        q = sp.csr_matrix((vals, (rows, cols)), shape=(len(hs), len(self.catalog)))
        q.sum_duplicates()
        q.data = np.minimum(q.data, 1.0) if c.weighting == "none" else q.data
        return q

    def score(self, histories: list[np.ndarray]):
        q = self._query(histories)
        qnorm = np.sqrt(np.asarray(q.multiply(q).sum(1)).ravel())
        sims = (q @ self.neighbours.T).toarray()
        sims /= np.maximum(qnorm[:, None] * self.neighbour_norms[None, :], 1e-12)
        sims = torch.as_tensor(sims, dtype=torch.float32)
        k = min(self.config.k, sims.shape[1])
        top = torch.topk(sims, k, dim=1)
        kept = torch.zeros_like(sims).scatter_(1, top.indices, top.values)
        scores = (self.neighbours.T @ kept.numpy().T).T          # [B, n_items]
        return torch.as_tensor(np.ascontiguousarray(scores) + self.tie_break, dtype=torch.float32)

    def _save(self, path: Path) -> None:
        x = self.neighbours
        save_file({"indptr": x.indptr.astype(np.int64), "indices": x.indices.astype(np.int64),
                   "shape": np.asarray(x.shape, np.int64)}, str(path / "model.safetensors"))

    def _load(self, path: Path) -> None:
        t = load_file(str(path / "model.safetensors"))
        n_users = int(t["shape"][0])
        user_rows = np.repeat(np.arange(n_users), np.diff(t["indptr"]))
        self._set_neighbours(user_rows, t["indices"], n_users)
