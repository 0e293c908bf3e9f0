"""Readers: real MovieLens files, and every kind of bad input counted or raised with file and line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dualrec.data import DataError, read_interactions, read_ml1m
from dualrec.data.movielens import data_dir, load

MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure|Children's|Fantasy\n"


def test_ml1m_shared_copy_is_read_whole(ml1m):
    inter = ml1m.interactions
    assert len(inter) == 487_650
    assert inter["user"].nunique() == 2999 and inter["user"].min() == 1 and inter["user"].max() == 2999
    assert len(ml1m.catalog) == 3883
    assert ml1m.reports[1].n_skipped == 0
    # movies.dat is Latin-1: the decoder says how many lines were not UTF-8 instead of failing
    assert ml1m.reports[0].notes["lines decoded as Latin-1 (not UTF-8)"] > 0
    assert "Les Misérables (1995)" in set(ml1m.catalog.items["title"])
    first = inter.iloc[0]
    assert (first.user, first["item"], first.rating, first.timestamp) == (1, 1193, 5.0, 978300760)


def test_top_items_keeps_the_most_rated(ml1m, ml1m_top1000):
    counts = ml1m.interactions["item"].value_counts()
    kept = set(ml1m_top1000.catalog.ids)
    assert len(kept) == 1000
    assert counts[list(kept)].min() >= counts.drop(list(kept)).max()
    assert ml1m_top1000.filters["ratings_outside_top_items"] == len(ml1m.interactions) - len(ml1m_top1000.interactions)


def test_ml100k(ml100k):
    assert len(ml100k.interactions) == 100_000
    assert ml100k.interactions["user"].nunique() == 943
    assert ml100k.catalog.title(1) == "Toy Story (1995)"
    assert "Animation" in ml100k.catalog.genres(1)


@pytest.fixture
def bad_ml1m(tmp_path):
    (tmp_path / "movies.dat").write_bytes(MOVIES.encode() + "3::Misérables, Les (1995)::Drama\n".encode("latin-1"))
    (tmp_path / "ratings.dat").write_text(
        "1::1::5::100\n"
        "1::2::x::101\n"        # malformed (rating not a number)
        "1::2::::102\n"         # empty rating
        "1::99::4::103\n"       # unknown item
        "2::1::3::104\n"
        "2::1::4::105\n"        # duplicate (user, item): the later one is kept
        "garbage\n"             # malformed
        "2::3::4::106\n")
    return tmp_path


def test_bad_lines_are_counted_with_file_and_line(bad_ml1m):
    ds = read_ml1m(bad_ml1m)
    rep = ds.reports[1]
    assert rep.read == 8 and rep.kept == 3  # lines 1, 6 and 8
    assert rep.skipped == {"malformed line": 2, "empty rating": 1, "unknown item id": 1,
                           "duplicate (user, item) rating, kept the latest": 1}
    assert rep.examples["malformed line"][0].startswith("ratings.dat:2:")
    assert rep.examples["empty rating"][0].startswith("ratings.dat:3:")
    assert rep.examples["unknown item id"][0] == "ratings.dat:4: item 99 not in the item file"
    assert rep.examples["duplicate (user, item) rating, kept the latest"][0] == "ratings.dat:5: user 2 item 1"
    kept = ds.interactions.set_index(["user", "item"])["rating"]
    assert kept[(2, 1)] == 4.0  # the latest duplicate wins
    assert ds.catalog.title(3) == "Les Misérables (1995)"  # a Latin-1 title decoded, not dropped
    assert "skipped 2 (malformed line)" in rep.summary()


def test_errors_raise_names_file_and_line(bad_ml1m):
    with pytest.raises(DataError, match=r"ratings\.dat:2: '1::2::x::101': malformed line"):
        read_ml1m(bad_ml1m, errors="raise")


def test_missing_dataset_names_path_and_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ml-1m/movies\.dat not found; fetch it with `dualrec data download ml-1m`"):
        load("ml-1m", tmp_path)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALREC_DATA_DIR", str(tmp_path / "env"))
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DUALREC_DATA_DIR")
    assert "dualrec" in str(data_dir(None))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_interactions(tmp_path, fmt):
    items = pd.DataFrame({"item": [10, 20, 30], "title": ["Song A (2001)", "Song B", "Song C"],
                          "genres": ["Rock|Pop", "Jazz", ""]})
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [10, 20, 30, 40, 10],
                          "timestamp": [5, 6, 7, 8, None]})
    if fmt == "csv":
        items.to_csv(tmp_path / "items.csv", index=False)
        inter.to_csv(tmp_path / "inter.csv", index=False)
    else:
        items.to_parquet(tmp_path / "items.csv".replace("csv", "parquet"))
        inter.to_parquet(tmp_path / "inter.parquet")
    ds = read_interactions(tmp_path / f"inter.{fmt}", tmp_path / f"items.{fmt}")
    assert sorted(ds.interactions["item"]) == [10, 20, 30]
    rep = ds.reports[0]
    assert rep.skipped["unknown item id"] == 1
    assert rep.skipped["missing or non-numeric user/item/timestamp"] == 1
    assert ds.catalog.genres(10) == ("Rock", "Pop") and ds.catalog.year(10) == 2001
    with pytest.raises(DataError, match="missing column 'stamp'"):
        read_interactions(tmp_path / f"inter.{fmt}", tmp_path / f"items.{fmt}", time_col="stamp")


def test_fingerprint_changes_with_data(ml1m_top1000, ml1m_small):
    assert ml1m_top1000.fingerprint() == ml1m_top1000.fingerprint()
    assert ml1m_top1000.fingerprint() != ml1m_small.fingerprint()


def test_sequences_are_chronological(ml1m_top1000):
    seqs = ml1m_top1000.sequences()
    assert len(seqs) == 2999 and seqs.lengths.sum() == len(ml1m_top1000.interactions)
    for i in (0, 100, 2998):
        t = seqs.times[seqs.offsets[i]:seqs.offsets[i + 1]]
        assert np.all(np.diff(t) >= 0)


def test_shuffled_order_keeps_each_users_items_in_a_seeded_random_order(ml1m_small):
    seqs = ml1m_small.sequences()
    shuffled = ml1m_small.shuffled_order(7).sequences()
    again = ml1m_small.shuffled_order(7).sequences()
    assert np.array_equal(shuffled.users, seqs.users) and np.array_equal(shuffled.offsets, seqs.offsets)
    assert np.array_equal(shuffled.items, again.items)   # seeded
    for i in range(len(seqs)):
        assert sorted(shuffled[i].tolist()) == sorted(seqs[i].tolist())
        if len(seqs[i]) >= 10:   # an identity permutation of 10 items: 1 in 3.6 million
            assert not np.array_equal(shuffled[i], seqs[i])
    assert ml1m_small.shuffled_order(7).filters["shuffle_order"] == 7
    assert not np.array_equal(ml1m_small.shuffled_order(8).sequences().items, shuffled.items)


def test_shuffle_order_refuses_a_time_split():
    from dualrec.config import ExperimentConfig
    from dualrec.experiment import load_dataset

    cfg = ExperimentConfig.from_dict({"data": {"shuffle_order": True}, "evaluation": {"protocol": "chrono"}})
    with pytest.raises(ValueError, match="shuffle_order.*chrono"):
        load_dataset(cfg)
