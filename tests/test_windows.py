"""Vectorised windows agree with the obvious loop."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dualrec.data.windows import make_windows


def windows_by_loop(seqs, max_len, min_len, pad, first_target=None):
    xs, ys, owner = [], [], []
    for u, s in enumerate(seqs):
        lo = max(min_len, 0 if first_target is None else first_target[u])
        for p in range(lo, len(s)):
            hist = list(s[max(0, p - max_len):p])
            xs.append([pad] * (max_len - len(hist)) + hist)
            ys.append(s[p])
            owner.append(u)
    return np.array(xs, dtype=np.int64).reshape(-1, max_len), np.array(ys, dtype=np.int64), np.array(owner)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 50), min_size=0, max_size=40), min_size=1, max_size=8),
       st.integers(1, 12), st.integers(1, 12), st.booleans())
def test_windows_match_loop(seqs, max_len, min_len, use_first):
    seqs = [np.array(s, dtype=np.int64) for s in seqs]
    first = [len(s) // 2 for s in seqs] if use_first else None
    x, y, o = make_windows(seqs, max_len, min_len, pad=-1, first_target=first)
    ex, ey, eo = windows_by_loop(seqs, max_len, min_len, -1, first)
    assert np.array_equal(x, ex) and np.array_equal(y, ey) and np.array_equal(o, eo)


def test_paper_windows_are_30_plus_target():
    seq = np.arange(100, 135)  # 35 items: targets at positions 30..34
    x, y, _ = make_windows([seq], 30)
    assert x.shape == (5, 30) and y.tolist() == list(range(130, 135))
    assert x[0].tolist() == list(range(100, 130))
