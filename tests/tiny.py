"""A tiny synthetic catalog and per-user sequences (no MovieLens rows): fast, fixed, safe to commit with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences

GENRES = ["Action", "Comedy", "Drama"]


def tiny_catalog(n_items: int = 20) -> Catalog:
    frame = pd.DataFrame({"item": np.arange(1, n_items + 1) * 10,
                          "title": [f"Film {chr(65 + i % 26)}{i} ({1990 + i})" for i in range(n_items)],
                          "genres": ["|".join(GENRES[j] for j in range(3) if (i >> j) & 1) for i in range(n_items)]})
    return Catalog.from_frame(frame, genre_names=GENRES)


def tiny_sequences(catalog: Catalog, n_users: int = 32, seed: int = 0, min_len: int = 6,
                   max_len: int = 25) -> Sequences:
    """Users walking the catalog with a step of 1 or 2 items (a learnable next-item signal)."""
    rng = np.random.default_rng(seed)
    ids = catalog.ids
    seqs = []
    for _ in range(n_users):
        pos = np.cumsum(rng.integers(1, 3, rng.integers(min_len, max_len + 1))) + rng.integers(len(ids))
        seqs.append(ids[pos % len(ids)])
    return Sequences.from_lists(np.arange(1, n_users + 1), seqs)


def tiny_interactions(catalog: Catalog, n_users: int = 32, seed: int = 0) -> pd.DataFrame:
    """:func:`tiny_sequences` as an interactions frame (``user``, ``item``, ``rating``, ``timestamp``): one
    interaction per minute along each user's sequence, users starting at staggered times."""
    seqs = tiny_sequences(catalog, n_users, seed)
    rows = [(int(u), int(item), 4.0, 10_000 * k + 60 * t)
            for k, u in enumerate(seqs.users) for t, item in enumerate(seqs[k])]
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
