"""Beyond-accuracy metrics and the MMR re-rank, each on a hand-computed example with exact values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences
from dualrec.evaluation.beyond import (ItemStats, beyond_accuracy, catalog_coverage, embedding_similarity, gini,
                                       genre_similarity, head_items, mean_pairwise, per_list_mean, self_information,
                                       training_users)
from dualrec.evaluation.evaluator import list_metrics
from dualrec.evaluation.protocols import EvalCases
from dualrec.models.mmr import MMRReranker, mmr_order, rerank, scaled
from tiny import tiny_catalog, tiny_sequences

# five catalog rows: {A}, {A, B}, {B}, {C}, {} ; three users: a full list, a short one, an empty one
GENRES = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
ROWS = np.array([[0, 1, 2], [0, 3, -1], [-1, -1, -1]])
TITLES = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0, -1]], dtype=np.float32)
USERS_PER_ITEM = np.array([7, 3, 1, 0, 1])


def test_coverage_and_gini_by_hand():
    # exposures 2, 1, 1, 1, 0: four of five items shown; sorted 0,1,1,1,2 -> sum (2j-6) c_j = 8, / (5 * 5)
    assert catalog_coverage(ROWS, 5) == pytest.approx(0.8, abs=1e-12)
    assert gini(ROWS, 5) == pytest.approx(0.32, abs=1e-12)
    assert gini(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0, abs=1e-12)         # equal exposure
    assert gini(np.array([[0], [0], [0]]), 4) == pytest.approx(0.75, abs=1e-12)          # one item: 1 - 1/n
    assert gini(np.full((2, 3), -1), 4) == 0.0


def test_intra_list_diversity_by_hand():
    # user 0: 1 - J = 0.5, 1, 0.5 -> 2/3; user 1: 1; the empty list has no pair
    assert mean_pairwise(genre_similarity(ROWS, GENRES), ROWS) == pytest.approx(5 / 6, abs=1e-7)
    # titles: user 0: 1 - cos = 1, 0.4, 0.2 -> 8/15; user 1: 1 - (-1) = 2 -> (8/15 + 2) / 2 = 19/15
    assert mean_pairwise(embedding_similarity(ROWS, TITLES), ROWS) == pytest.approx(19 / 15, abs=1e-6)


def test_novelty_and_tail_share_by_hand():
    info = self_information(USERS_PER_ITEM, 7)          # -log2((n + 1) / 8)
    np.testing.assert_allclose(info, [0.0, 1.0, 2.0, 3.0, 2.0], atol=1e-12)
    assert per_list_mean(info, ROWS) == pytest.approx((1.0 + 1.5) / 2, abs=1e-12)
    tail = (~head_items(USERS_PER_ITEM, 2)).astype(float)   # head: rows 0 and 1
    assert per_list_mean(tail, ROWS) == pytest.approx((1 / 3 + 1 / 2) / 2, abs=1e-12)
    # ties at the head's edge go to the lower catalog row
    assert head_items(np.array([1, 3, 1, 0, 1]), 2).tolist() == [True, True, False, False, False]


def test_beyond_accuracy_names_every_metric_at_each_k():
    out = beyond_accuracy(list(ROWS), 5, GENRES, ks=(2, 3), users_per_item=USERS_PER_ITEM, n_train_users=7,
                          title_embeddings=TITLES, head=2)
    assert out["catalog_coverage@3"] == pytest.approx(0.8)
    assert out["ild_genre@3"] == pytest.approx(5 / 6, abs=1e-7)
    assert out["tail_share@3"] == pytest.approx(5 / 12)
    # at k = 2 user 0's list is rows 0, 1: genre distance 0.5, title distance 1, novelty 0.5, tail 0
    assert out["ild_genre@2"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-7)
    assert out["ild_title@2"] == pytest.approx((1.0 + 2.0) / 2, abs=1e-6)
    assert out["novelty@2"] == pytest.approx((0.5 + 1.5) / 2)
    assert out["gini@2"] == pytest.approx((-2 * 0 + 0 * 1 + 2 * 1 + 4 * 2 - 4 * 0) / (5 * 4))
    assert "ild_title@2" not in beyond_accuracy(list(ROWS), 5, GENRES, ks=(2,))


def test_training_users_counts_each_user_once_and_skips_unknown_items():
    catalog = tiny_catalog(4)   # ids 10, 20, 30, 40
    train = Sequences.from_lists([1, 2], [[10, 20, 10], [20, 999]])
    assert training_users(train, catalog).tolist() == [1, 2, 0, 0]


def test_item_stats_say_what_they_cannot_compute():
    catalog = tiny_catalog(6)
    stats = ItemStats.of(catalog)
    assert set(stats.notes) == {"novelty, tail_share", "ild_title"}
    with pytest.raises(ValueError, match="3 title embeddings for a catalog of 6"):
        ItemStats.of(catalog, title_embeddings=np.zeros((3, 2)))


def test_list_metrics_adds_beyond_accuracy_to_accuracy():
    catalog = tiny_catalog(20)
    train = tiny_sequences(catalog, n_users=10)
    ids = catalog.ids
    cases = EvalCases(np.array([1, 2]), [ids[:2], ids[2:4]], [ids[5:6], ids[19:20]])
    items = [ids[4:14], ids[5:15]]
    metrics, ranks = list_metrics(items, cases, catalog, (1, 10), ItemStats.of(catalog, train))
    assert ranks.tolist() == [1, -1]
    assert metrics["HR@10"] == 0.5
    assert metrics["catalog_coverage@10"] == pytest.approx(11 / 20)
    assert "catalog_coverage@20" not in metrics and "novelty@10" in metrics


# ---- MMR ---------------------------------------------------------------------------------------------------------

def test_mmr_hand_example():
    # scores 3, 2, 1 scale to 1, 0.5, 0; items a and b share their genre, c has another
    rel = scaled(np.array([[3.0, 2.0, 1.0]]), np.ones((1, 3), bool))
    np.testing.assert_allclose(rel, [[1.0, 0.5, 0.0]])
    sim = np.array([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    # lambda 0.5, step 2: b = 0.25 - 0.5 = -0.25, c = 0 - 0 = 0 -> c; then b
    assert mmr_order(rel, sim, 0.5, 3).tolist() == [[0, 2, 1]]
    # lambda 0.8, step 2: b = 0.4 - 0.2 = 0.2 beats c = 0
    assert mmr_order(rel, sim, 0.8, 3).tolist() == [[0, 1, 2]]
    assert mmr_order(rel, sim, 1.0, 3).tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mmr_order(rel, sim, 1.5, 3)


def test_mmr_lambda_one_is_the_base_ranking_and_padding_is_never_chosen():
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.random((50, 30)), axis=1)
    sim = rng.random((50, 30, 30))
    assert (mmr_order(scaled(scores, np.ones_like(scores, bool)), sim, 1.0, 30) == np.arange(30)).all()
    valid = np.arange(30)[None] < rng.integers(0, 31, (50, 1))
    out = mmr_order(scaled(scores, valid), sim, 0.3, 30, valid)
    assert ((out >= 0) == (np.arange(30)[None] < valid.sum(1, keepdims=True))).all()
    assert all(set(o[o >= 0]) == set(np.flatnonzero(v)) for o, v in zip(out, valid))


def test_rerank_keeps_the_tail_after_the_candidates():
    catalog = tiny_catalog(8)   # row i has genres from its bits: rows 1 and 3 share Action
    ids = catalog.ids
    items, scores = [ids[[1, 3, 2, 5, 7]]], [np.array([5.0, 4.0, 3.0, 2.0, 1.0])]
    out = rerank(items, scores, catalog, 0.0, 5, 3, catalog.genre_matrix())
    # candidates rows 1 {Action}, 3 {Action, Comedy}, 2 {Comedy}: after row 1, row 2 shares nothing with it
    assert out[0].tolist() == ids[[1, 2, 3, 5, 7]].tolist()


def test_mmr_model_with_lambda_one_equals_its_base(tmp_path):
    from dualrec.models import build_model

    catalog = tiny_catalog(20)
    train = tiny_sequences(catalog)
    base = build_model("sknn", {"k": 5}).fit(train, catalog)
    base.save(tmp_path / "base")
    histories = [train[i] for i in range(8)]
    want = [r[:10] for r in base.recommend(histories, 15).items]   # its top 15, as MMR reads it (ties stay put)
    one = build_model("mmr", {"base": str(tmp_path / "base"), "lambda_": 1.0, "n_candidates": 15}).fit(train, catalog)
    assert all((a == b).all() for a, b in zip(one.recommend(histories, 10).items, want))
    half = build_model("mmr", {"base": str(tmp_path / "base"), "lambda_": 0.0, "n_candidates": 15}).fit(train,
                                                                                                        catalog)
    got = half.recommend(histories, 10).items
    assert all(a[0] == b[0] for a, b in zip(got, want))            # the base's best item still comes first
    assert any((a != b).any() for a, b in zip(got, want))
    half.save(tmp_path / "mmr")
    again = MMRReranker.load(tmp_path / "mmr")
    assert all((a == b).all() for a, b in zip(again.recommend(histories, 10).items, got))
    with pytest.raises(ValueError, match="lambda_"):
        build_model("mmr", {"base": "x", "lambda_": -0.1})


def test_a_run_without_title_diversity_says_so_in_its_notes():
    from types import SimpleNamespace

    from dualrec import experiment as ex
    from dualrec.config import ExperimentConfig
    from dualrec.evaluation.protocols import make_split

    catalog = tiny_catalog(20)
    cfg = ExperimentConfig()
    cfg.evaluation.title_diversity = False
    prepared = ex.Prepared(SimpleNamespace(catalog=catalog), make_split(tiny_sequences(catalog), "strict"))
    stats = ex.item_stats(cfg, prepared)
    assert stats.title_embeddings is None and stats.users_per_item.sum() > 0
    assert stats.notes == {"ild_title": "not computed: evaluation.title_diversity is false"}
    assert ex.item_stats(cfg, prepared) is stats      # computed once per split
