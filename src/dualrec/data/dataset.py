"""A loaded dataset (interactions + catalog + load reports) and the per-user sequences models train on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dualrec.data.catalog import Catalog
from dualrec.data.report import LoadReport


@dataclass
class Sequences:
    """Per-user chronological item sequences in one flat array (CSR layout: ``items[offsets[u]:offsets[u+1]]``).

    Items are original ids. Ties in time keep file order (a stable sort), as the authors' code does.
    """

    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    times: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Sequences":
        order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy()))
        users_sorted = frame["user"].to_numpy()[order]
        users, starts = np.unique(users_sorted, return_index=True)
        offsets = np.append(starts, len(order)).astype(np.int64)
        return cls(users.astype(np.int64), offsets, frame["item"].to_numpy(np.int64)[order],
                   frame["timestamp"].to_numpy(np.int64)[order])

    @classmethod
    def from_lists(cls, users, seqs, times=None) -> "Sequences":
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if len(seqs) else np.zeros(0, np.int64)
        t = (np.concatenate([np.asarray(x, dtype=np.int64) for x in times]) if times is not None
             else np.zeros(len(items), np.int64))
        return cls(np.asarray(users, dtype=np.int64), offsets, items, t)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i]:self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_list(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]

    def select(self, mask: np.ndarray) -> "Sequences":
        """Users where ``mask`` is true, sequences intact."""
        idx = np.flatnonzero(mask)
        return self.from_lists(self.users[idx], [self[i] for i in idx],
                               [self.times[self.offsets[i]:self.offsets[i + 1]] for i in idx])

    def truncate(self, drop_last: int) -> "Sequences":
        """Every sequence without its last ``drop_last`` items (empty sequences stay, empty)."""
        seqs = [self[i][: max(len(self[i]) - drop_last, 0)] for i in range(len(self))]
        times = [self.times[self.offsets[i]:self.offsets[i + 1]][: len(s)] for i, s in enumerate(seqs)]
        return self.from_lists(self.users, seqs, times)


@dataclass
class Dataset:
    """Interactions (``user``, ``item``, ``rating``, ``timestamp``; original ids) with their catalog."""

    name: str
    interactions: pd.DataFrame
    catalog: Catalog
    reports: list[LoadReport] = field(default_factory=list)
    filters: dict = field(default_factory=dict)

    def top_items(self, n: int | None, counted: np.ndarray | None = None, source: str = "all") -> "Dataset":
        """Keep the ``n`` most-rated items (ties broken by smaller id), as DUALRec's preprocessing does.

        ``counted``: the item ids (one per interaction) the popularity is counted on; by default every interaction,
        as the DUALRec paper does. Counting only a split's training side (``source="train"``) keeps held-out
        interactions, and under a time split the future, out of the choice. The catalog shrinks to the kept items;
        :attr:`filters` records ``top_items``, ``top_items_from`` (``source``) and the dropped ratings.
        """
        if not n:
            return self
        if counted is None and n >= self.interactions["item"].nunique():
            return self
        items = self.interactions["item"] if counted is None else pd.Series(np.asarray(counted, dtype=np.int64))
        counts = items.value_counts()
        counts = counts.sort_index().sort_values(ascending=False, kind="stable")
        keep = np.sort(counts.index[:n].to_numpy())
        keep = keep[self.catalog.has(keep)]
        mask = self.interactions["item"].isin(keep).to_numpy()
        filters = dict(self.filters, top_items=n, top_items_from=source, ratings_outside_top_items=int((~mask).sum()))
        return Dataset(self.name, self.interactions[mask].reset_index(drop=True), self.catalog.subset(keep),
                       self.reports, filters)

    def shuffled_order(self, seed: int) -> "Dataset":
        """Every user's interactions in a seeded random order: each row's timestamp becomes its position in a
        random permutation of its user's rows (0 .. n-1), so the sequences, and any split of them, lose their time
        order but keep their items. ``filters["shuffle_order"]`` records the seed."""
        inter = self.interactions
        rng = np.random.default_rng(seed)
        key = rng.random(len(inter))   # the new order: by user, then by a random key
        order = np.lexsort((key, inter["user"].to_numpy()))
        users = inter["user"].to_numpy()[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        timestamps = np.empty(len(inter), np.int64)
        timestamps[order] = position
        return Dataset(self.name, inter.assign(timestamp=timestamps), self.catalog, self.reports,
                       dict(self.filters, shuffle_order=seed))

    def sequences(self) -> Sequences:
        return Sequences.from_frame(self.interactions)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex) of the interactions as loaded and filtered: two runs on the same data agree."""
        h = hashlib.sha256()
        for col in ("user", "item", "timestamp"):
            h.update(np.ascontiguousarray(self.interactions[col].to_numpy(np.int64)).tobytes())
        h.update(np.ascontiguousarray(self.catalog.ids).tobytes())
        return h.hexdigest()[:16]

    def info(self) -> dict:
        inter = self.interactions
        per_user = inter.groupby("user").size()
        return {
            "name": self.name,
            "users": int(inter["user"].nunique()),
            "items_rated": int(inter["item"].nunique()),
            "catalog_items": len(self.catalog),
            "interactions": len(inter),
            "per_user": {"min": int(per_user.min()), "median": float(per_user.median()), "max": int(per_user.max())}
            if len(per_user) else {},
            "time": [int(inter["timestamp"].min()), int(inter["timestamp"].max())] if len(inter) else [],
            "filters": self.filters,
            "fingerprint": self.fingerprint(),
            "reports": [r.to_dict() for r in self.reports],
        }
