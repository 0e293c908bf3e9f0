"""Metrics: hand-computed cases, and agreement with an independent implementation (ranx) on random rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dualrec.evaluation.metrics import MISS, first_hit_ranks, genre_jaccard, jaccard, ranking_metrics


def test_hand_computed_single_target():
    recs = [np.array([5, 3, 9]), np.array([1, 2, 3]), np.array([7]), np.array([], dtype=np.int64)]
    targets = [np.array([3]), np.array([4]), np.array([7]), np.array([1])]
    ranks = first_hit_ranks(recs, targets, max_k=3)
    assert ranks.tolist() == [1, MISS, 0, MISS]
    m = ranking_metrics(ranks, [1, 3])
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(2 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1) / 4)
    assert m["MRR@3"] == pytest.approx((1 / 2 + 1) / 4)


def test_paper_style_any_of_five_targets_first_hit():
    recs = [np.array([10, 11, 12, 13, 14])]
    targets = [np.array([99, 13, 12, 98, 97])]
    ranks = first_hit_ranks(recs, targets, max_k=5)
    assert ranks.tolist() == [2]  # 12 is the first recommended item that is any target
    m = ranking_metrics(ranks, [1, 5])
    assert m["HR@1"] == 0 and m["HR@5"] == 1 and m["NDCG@5"] == pytest.approx(1 / math.log2(4))


def test_short_lists_just_miss():
    ranks = first_hit_ranks([np.array([1])], [np.array([2])], max_k=10)
    assert ranking_metrics(ranks, [10])["HR@10"] == 0


def test_genre_jaccard():
    a = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=float)
    t = np.array([[[1, 0, 0, 0], [1, 1, 0, 0]], [[0, 1, 0, 0], [0, 0, 1, 0]]], dtype=float)
    assert jaccard(a[0], t[0, 0]) == pytest.approx(0.5)
    g = genre_jaccard(a, t, np.array([True, True]))
    assert g["genre_jaccard"] == pytest.approx((0.5 + 0.0) / 2)
    assert g["genre_jaccard_best"] == pytest.approx((1.0 + 0.0) / 2)
    assert genre_jaccard(a, t, np.array([False, True]))["genre_jaccard_best"] == 0.0


def test_agrees_with_torchmetrics_on_random_rankings():
    import torch
    import torchmetrics.retrieval as tm  # the test extra installs it: a missing reference must fail, not skip
    rng = np.random.default_rng(0)
    n_users, n_items, k = 300, 60, 20
    recs, targets, preds, truth, index = [], [], [], [], []
    for u in range(n_users):
        order = rng.permutation(n_items)
        target = int(rng.integers(0, n_items))
        recs.append(order[:k])
        targets.append(np.array([target]))
        score = np.empty(n_items)
        score[order] = np.arange(n_items, 0, -1)  # a full ranking without ties: torchmetrics sorts by score
        preds.append(score)
        truth.append(np.arange(n_items) == target)
        index.append(np.full(n_items, u))
    p, t, i = (torch.as_tensor(np.concatenate(x)) for x in (preds, truth, index))
    ours = ranking_metrics(first_hit_ranks(recs, targets, k), [1, 5, 10, 20])
    for name, metric in [("HR@1", tm.RetrievalHitRate(top_k=1)), ("HR@5", tm.RetrievalHitRate(top_k=5)),
                         ("HR@10", tm.RetrievalHitRate(top_k=10)), ("NDCG@5", tm.RetrievalNormalizedDCG(top_k=5)),
                         ("NDCG@20", tm.RetrievalNormalizedDCG(top_k=20)), ("MRR@20", tm.RetrievalMRR(top_k=20))]:
        assert ours[name] == pytest.approx(metric(p, t, indexes=i).item(), abs=1e-6), name
