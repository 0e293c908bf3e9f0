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


IGNORE = -100  # the target of a position that predicts nothing (padding, too little history): F.cross_entropy's


def make_chunks(seqs: Sequence[np.ndarray], max_len: int, min_len: int = 1, pad: int = -1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence cut into rows of ``max_len`` positions where every position predicts its next item.

    Row ``r`` holds items ``s[p - max_len .. p - 1]`` as input and ``s[p - max_len + 1 .. p]`` as targets (the
    input shifted by one), left-padded with ``pad``; rows are laid from the end of the sequence backwards, so
    every item at position ``>= min_len`` (at least ``min_len`` items before it, and always at least one) is the
    target of exactly one row, and the last row ends at the sequence's last item. Targets that predict nothing
    (padding, fewer than ``min_len`` items before) are :data:`IGNORE`. Returns ``inputs [N, max_len]`` and
    ``targets [N, max_len]``.
    """
    min_len = max(min_len, 1)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    keep = lengths > min_len
    seqs = [np.asarray(s, dtype=np.int64) for s, k in zip(seqs, keep) if k]
    lengths = lengths[keep]
    if not len(seqs):
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    block = lengths + max_len
    starts = np.concatenate([[0], np.cumsum(block)[:-1]])
    flat = np.full(block.sum(), pad, dtype=np.int64)
    pos = np.full(block.sum(), -1, dtype=np.int64)   # position of each slot in its sequence; -1 for padding
    owner = np.repeat(np.arange(len(seqs)), lengths)
    pos_in_seq = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    slot = starts[owner] + max_len + pos_in_seq
    flat[slot] = np.concatenate(seqs)
    pos[slot] = pos_in_seq
    # the last target of each row: the sequence's last item, then every max_len items back while >= min_len
    from_end = lengths[owner] - 1 - pos_in_seq
    ends = slot[(from_end % max_len == 0) & (pos_in_seq >= min_len)]
    x = sliding_window_view(flat, max_len)[ends - max_len]
    y = sliding_window_view(flat, max_len)[ends - max_len + 1]
    y_pos = sliding_window_view(pos, max_len)[ends - max_len + 1]
    return np.ascontiguousarray(x), np.where(y_pos >= min_len, y, IGNORE)
