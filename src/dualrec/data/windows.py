"""Sliding windows (history -> next item) over per-user sequences, built without per-row Python loops."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def make_windows(seqs: Sequence[np.ndarray], max_len: int, min_len: int | None = None, pad: int = -1,
                 first_target: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (previous ``max_len`` items, next item) pair, left-padded with ``pad``.

    ``min_len`` is how many real items a window needs: ``max_len`` (the default) gives DUALRec's full windows of
    30 with the 31st as target; ``1`` gives every prefix (GRU4Rec/SASRec style). ``first_target[u]`` is the first
    position of sequence ``u`` that may be a target (e.g. ``len(history)`` to keep only held-out targets).
    Returns ``inputs [N, max_len]``, ``targets [N]`` and ``owner [N]`` (the index of the sequence each came from).
    """
    min_len = max_len if min_len is None else min_len
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if lengths.sum() == 0:
        return np.zeros((0, max_len), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    # each sequence preceded by max_len pads: every window then lies inside one padded block
    block = lengths + max_len
    starts = np.concatenate([[0], np.cumsum(block)[:-1]])
    flat = np.full(block.sum(), pad, dtype=np.int64)
    real = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
    pos_in_seq = np.arange(len(real)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    owner_of_real = np.repeat(np.arange(len(seqs)), lengths)
    flat[starts[owner_of_real] + max_len + pos_in_seq] = real
    lo = np.maximum(min_len, 0 if first_target is None else np.asarray(first_target, dtype=np.int64)[owner_of_real])
    is_target = pos_in_seq >= lo
    target_flat = (starts[owner_of_real] + max_len + pos_in_seq)[is_target]
    view = sliding_window_view(flat, max_len)  # view[j] = flat[j : j + max_len]
    inputs = view[target_flat - max_len]
    return np.ascontiguousarray(inputs), flat[target_flat], owner_of_real[is_target]
