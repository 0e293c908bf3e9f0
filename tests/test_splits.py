"""Protocols: what the model may see, and what it is scored on."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.evaluation.protocols import make_split


def test_strict_leave_one_out_has_no_future_in_inputs(ml1m_top1000):
    seqs = ml1m_top1000.sequences()
    sp = make_split(seqs, "strict")
    assert len(sp.test) == len(seqs)  # every user with 3+ items is tested, none sampled
    for i in range(0, len(seqs), 97):
        full, times = seqs[i], seqs.times[seqs.offsets[i]:seqs.offsets[i + 1]]
        j = int(np.flatnonzero(sp.train.users == seqs.users[i])[0])
        assert np.array_equal(sp.train[j], full[:-2])
        assert np.array_equal(sp.valid.histories[i], full[:-2]) and sp.valid.targets[i].tolist() == [full[-2]]
        assert np.array_equal(sp.test.histories[i], full[:-1]) and sp.test.targets[i].tolist() == [full[-1]]
        # no training item of this user is later in time than the validation target
        assert times[: len(full) - 2].max() <= times[-2]


def test_paper_split_keeps_users_in_one_split(ml1m_top1000):
    sp = make_split(ml1m_top1000.sequences(), "paper")
    train, valid, test = set(sp.train.users), set(sp.valid.users), set(sp.test.users)
    assert not (train & valid) and not (train & test) and not (valid & test)
    # the authors cut rows in file (user id) order: test users are the highest ids
    assert min(test) > max(valid) > max(train)
    assert all(len(t) == 5 for t in sp.test.targets)
    n_rows = sp.train.lengths.sum()
    assert 0.65 < n_rows / len(ml1m_top1000.interactions) < 0.72


def test_chrono_split_is_a_global_time_cut(ml1m_top1000):
    seqs = ml1m_top1000.sequences()
    sp = make_split(seqs, "chrono")
    t1, t2 = sp.counts["time_cuts"]
    assert sp.train.times.max() <= t1
    # every test target happened after the second cut; its history holds only earlier items of that user
    lookup = {u: i for i, u in enumerate(seqs.users)}
    for c in range(0, len(sp.test), 1000):
        i = lookup[sp.test.users[c]]
        full, times = seqs[i], seqs.times[seqs.offsets[i]:seqs.offsets[i + 1]]
        pos = len(sp.test.histories[c])
        assert full[pos] == sp.test.targets[c][0] and times[pos] > t2
        assert np.array_equal(full[:pos], sp.test.histories[c])


@pytest.mark.integration
def test_chrono_top_items_are_counted_on_training_interactions_only():
    from dualrec import experiment as ex
    from dualrec.config import ExperimentConfig
    from conftest import ML1M_RATINGS, SHARED_DATA

    def cfg(protocol, source=None):
        return ExperimentConfig.load(None, [f"evaluation.protocol={protocol}", f"data.data_dir={SHARED_DATA}",
                                            f"data.ratings={ML1M_RATINGS}"]
                                     + ([f"data.top_items_from={source}"] if source else []))

    chrono = ex.prepare(cfg("chrono"))
    filters = chrono.dataset.filters
    assert (filters["top_items"], filters["top_items_from"]) == (1000, "train")
    assert chrono.split.counts["time_cuts"] == filters["top_items_time_cuts"]   # the cuts the counts were taken at
    assert filters["top_items_time_cuts"] == [976862649, 980998147]           # quantiles of the ratings as loaded
    assert (len(chrono.dataset.interactions), chrono.split.counts["test_cases"]) == (365219, 33012)
    # the kept items are exactly the 1,000 most-rated before the first cut (ties: smaller id)
    raw = ex.load_dataset(cfg("chrono", "all"))
    from dualrec.data import read_ml1m

    full = read_ml1m(SHARED_DATA / "ml-1m", ratings=ML1M_RATINGS).interactions
    before = full[full["timestamp"] <= filters["top_items_time_cuts"][0]]["item"].value_counts()
    before = before.sort_index().sort_values(ascending=False, kind="stable")
    assert sorted(chrono.dataset.catalog.ids.tolist()) == sorted(before.index[:1000].tolist())
    assert raw.filters["top_items_from"] == "all"
    assert len(set(raw.catalog.ids.tolist()) - set(chrono.dataset.catalog.ids.tolist())) == 24
    assert ex.load_dataset(cfg("paper")).filters["top_items_from"] == "all"     # the paper's choice stays
    with pytest.raises(ValueError, match="data.top_items_from must be one of"):
        ex.top_items_source(cfg("strict", "test"))


def test_a_run_saved_before_top_items_from_keeps_the_all_data_catalog(tmp_path):
    from dualrec import experiment as ex

    old = tmp_path / "experiment.yaml"
    old.write_text("model: {name: lstm}\ndata: {name: ml-1m, top_items: 1000}\nevaluation: {protocol: chrono}\n")
    assert ex.run_config(old).data.top_items_from == "all"
    new = tmp_path / "new.yaml"
    new.write_text("model: {name: lstm}\ndata: {name: ml-1m, top_items: 1000, top_items_from: null}\n"
                   "evaluation: {protocol: chrono}\n")
    assert ex.top_items_source(ex.run_config(new)) == "train"


def test_every_registered_protocol_splits_and_an_unknown_one_names_the_choices():
    """One registry entry per protocol: its split labels itself with the protocol's name, and a typo lists the
    registered names instead of falling through an if-chain."""
    from dualrec.data.dataset import Sequences
    from dualrec.evaluation.protocols import PROTOCOLS, get_protocol

    users = np.arange(12)
    seqs = Sequences.from_lists(users, [np.arange(12) + u for u in users],
                                [np.arange(12) * 10 + u for u in users])
    assert PROTOCOLS == ("strict", "paper", "chrono")
    for name in PROTOCOLS:
        assert make_split(seqs, name).protocol == name and get_protocol(name).note
    assert get_protocol("chrono").top_items_from == "train" and get_protocol("strict").top_items_from == "all"
    with pytest.raises(ValueError, match=r"unknown protocol 'stict'; choose one of \('strict', 'paper', 'chrono'\)"):
        make_split(seqs, "stict")
