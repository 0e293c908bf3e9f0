"""Evaluation protocols: how per-user sequences become training data and held-out (history, targets) cases.

* ``strict`` (default): leave-one-out. Each user's last item is the test target, the one before it the
  validation target; models train on everything before those. Every user with 3+ items is tested.
* ``paper``: the DUALRec authors' protocol (see docs/protocols.md): users are cut 70/15/15 in file (= user id)
  order, keeping users whole; a test user's history is all but the last 5 items and the targets are those 5.
  Users with fewer than 10 items are skipped, as in the authors' code, and counted.
* ``chrono``: one global time cut (DUIP's 80/10/10): interactions before the 80 % quantile of time train, the
  next 10 % validate, the last 10 % test; each held-out interaction is a case whose history is everything the
  user did before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from dualrec.data.dataset import Sequences

@dataclass
class EvalCases:
    """Held-out cases: for ``users[i]``, rank given ``histories[i]`` (oldest first); ``targets[i]`` are the hits."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.users)

    def head(self, n: int) -> "EvalCases":
        return EvalCases(self.users[:n], self.histories[:n], self.targets[:n])


@dataclass
class Split:
    protocol: str
    train: Sequences
    valid: EvalCases
    test: EvalCases
    counts: dict = field(default_factory=dict)


def split_strict(seqs: Sequences) -> Split:
    lengths = seqs.lengths
    ok = lengths >= 3
    idx = np.flatnonzero(ok)
    train_lists = [seqs[i][:-2] if ok[i] else seqs[i] for i in range(len(seqs))]
    train_times = [seqs.times[seqs.offsets[i]:seqs.offsets[i + 1]][: len(s)] for i, s in enumerate(train_lists)]
    valid = EvalCases(seqs.users[idx], [seqs[i][:-2] for i in idx], [seqs[i][-2:-1] for i in idx])
    test = EvalCases(seqs.users[idx], [seqs[i][:-1] for i in idx], [seqs[i][-1:] for i in idx])
    return Split("strict", Sequences.from_lists(seqs.users, train_lists, train_times), valid, test,
                 {"users": len(seqs), "test_users": len(idx), "users_too_short(<3)": int((~ok).sum())})


def split_paper(seqs: Sequences, fractions=(0.70, 0.15, 0.15), n_targets: int = 5, min_items: int = 10) -> Split:
    order = np.argsort(seqs.users, kind="stable")
    cum = np.cumsum(seqs.lengths[order]) / max(seqs.lengths.sum(), 1)
    part = np.where(cum <= fractions[0] + 1e-12, 0, np.where(cum <= fractions[0] + fractions[1] + 1e-12, 1, 2))
    # users stay whole: a user whose rows straddle a cut goes to the later split (their last row decides)
    groups = [order[part == p] for p in range(3)]

    def cases(ids: np.ndarray) -> tuple[EvalCases, int]:
        ok = ids[seqs.lengths[ids] >= min_items]
        return (EvalCases(seqs.users[ok], [seqs[i][:-n_targets] for i in ok], [seqs[i][-n_targets:] for i in ok]),
                len(ids) - len(ok))

    valid, skipped_v = cases(groups[1])
    test, skipped_t = cases(groups[2])
    train = seqs.select(np.isin(np.arange(len(seqs)), groups[0]))
    return Split("paper", train, valid, test, {
        "users": len(seqs), "train_users": len(groups[0]), "valid_users": len(groups[1]),
        "test_users": len(test), f"test_users_skipped(<{min_items} items)": skipped_t,
        f"valid_users_skipped(<{min_items} items)": skipped_v,
    })


def split_chrono(seqs: Sequences, fractions=(0.80, 0.10, 0.10), time_cuts: Sequence[int] | None = None) -> Split:
    """``time_cuts`` (train end, validation end) fixes the cuts instead of taking them from ``seqs``' quantiles: the
    cuts the top-items filter counted before (``data.top_items_from: train``) stay the split's cuts."""
    if time_cuts is not None:
        t1, t2 = time_cuts
    else:
        t1, t2 = np.quantile(seqs.times, [fractions[0], fractions[0] + fractions[1]])
    train_lists, train_times = [], []
    v_users, v_hist, v_tgt, t_users, t_hist, t_tgt = [], [], [], [], [], []
    for i in range(len(seqs)):
        items, times = seqs[i], seqs.times[seqs.offsets[i]:seqs.offsets[i + 1]]
        n_train = int(np.searchsorted(times, t1, side="right"))
        n_valid = int(np.searchsorted(times, t2, side="right"))
        train_lists.append(items[:n_train])
        train_times.append(times[:n_train])
        for pos in range(max(n_train, 1), n_valid):
            v_users.append(seqs.users[i]); v_hist.append(items[:pos]); v_tgt.append(items[pos:pos + 1])
        for pos in range(max(n_valid, 1), len(items)):
            t_users.append(seqs.users[i]); t_hist.append(items[:pos]); t_tgt.append(items[pos:pos + 1])
    return Split("chrono", Sequences.from_lists(seqs.users, train_lists, train_times),
                 EvalCases(np.asarray(v_users, np.int64), v_hist, v_tgt),
                 EvalCases(np.asarray(t_users, np.int64), t_hist, t_tgt),
                 {"users": len(seqs), "time_cuts": [int(t1), int(t2)], "valid_cases": len(v_users),
                  "test_cases": len(t_users)})


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol: how it splits, how a whole-test-set record and a sampled run describe it, and where
    the top-items filter counts popularity by default (``train`` where the split is in time: no future popularity)."""

    name: str
    split: Callable[..., Split]
    note: str
    sample_note: str
    top_items_from: str = "all"


REGISTRY: dict[str, EvalProtocol] = {p.name: p for p in (
    EvalProtocol("strict", split_strict,
                 "leave-one-out, full ranking over the catalog, history excluded, every user counted",
                 "leave-one-out (each user's last movie held out), full ranking over the catalog, history excluded"),
    EvalProtocol("paper", split_paper,
                 "DUALRec authors' protocol: 70/15/15 users, last 5 items are targets, hit = any top-k in the 5",
                 "the DUALRec authors' protocol: 70/15/15 users, last 5 items are targets, hit = any top-k in the 5"),
    EvalProtocol("chrono", split_chrono,
                 "DUIP's global time cut 80/10/10, every held-out interaction a case, full ranking",
                 "DUIP's global time cut 80/10/10, every held-out interaction a case, full ranking",
                 top_items_from="train"),
)}
PROTOCOLS = tuple(REGISTRY)


def get_protocol(name: str) -> EvalProtocol:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {PROTOCOLS}") from None


def make_split(seqs: Sequences, protocol: str = "strict", time_cuts: Sequence[int] | None = None) -> Split:
    """``time_cuts`` only applies to ``chrono`` (see :func:`split_chrono`)."""
    split = get_protocol(protocol).split
    return split(seqs, time_cuts=time_cuts) if time_cuts is not None else split(seqs)
