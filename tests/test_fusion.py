"""Fusion of Stage-1 candidates with other signals, the weight choice on validation, and the paired bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualrec.evaluation.bootstrap import paired_bootstrap, per_user
from dualrec.evaluation.compare import load_ranks
from dualrec.evaluation.metrics import MISS
from dualrec.models.fusion import fuse, order_by, simplex_grid, zscore


def test_zscore_standardises_each_row_and_zeroes_a_constant_one():
    z = zscore(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.224744871, 0.0, 1.224744871])
    assert z[1].tolist() == [0.0, 0.0, 0.0]


def test_simplex_grid_holds_pure_stage1_and_sums_to_one():
    grid = simplex_grid(["stage1", "llm"], 0.1)
    assert len(grid) == 11 and {"stage1": 1.0, "llm": 0.0} in grid and {"stage1": 0.0, "llm": 1.0} in grid
    three = simplex_grid(["stage1", "llm", "sbert"], 0.1)
    assert len(three) == 66 and all(abs(sum(w.values()) - 1) < 1e-9 for w in three)
    with pytest.raises(ValueError, match="divide 1"):
        simplex_grid(["stage1"], 0.3)


def test_fuse_and_order_follow_the_weights():
    cands = np.array([[10, 20, 30]])
    signals = {"stage1": np.array([[3.0, 2.0, 1.0]]), "llm": np.array([[0.0, 0.0, 9.0]])}
    assert order_by(cands, fuse(signals, {"stage1": 1.0, "llm": 0.0})).tolist() == [[10, 20, 30]]
    assert order_by(cands, fuse(signals, {"stage1": 0.0, "llm": 1.0})).tolist() == [[30, 10, 20]]  # ties: Stage 1
    # z(stage1) = [1.22, 0, -1.22], z(llm) = [-0.71, -0.71, 1.41]: at 0.5/0.5 item 30 (0.10) passes 20 (-0.35)
    assert order_by(cands, fuse(signals, {"stage1": 0.5, "llm": 0.5})).tolist() == [[10, 30, 20]]


def test_per_user_metrics_from_ranks():
    ranks = np.array([0, 1, 9, 10, MISS])
    assert per_user(ranks, "HR@10").tolist() == [1, 1, 1, 0, 0]
    np.testing.assert_allclose(per_user(ranks, "NDCG@10"), [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0, 0.0])
    with pytest.raises(ValueError, match="HR@k or NDCG@k"):
        per_user(ranks, "MRR@10")


def test_paired_bootstrap_exact_cases():
    a, b = np.zeros(50, int), np.full(50, MISS)
    ci = paired_bootstrap(a, b)              # A hits every user at rank 0, B never: the difference is 1, always
    assert ci["delta_NDCG@10"] == [1.0, 1.0] and ci["delta_HR@10"] == [1.0, 1.0] and ci["delta"]["HR@10"] == 1.0
    same = paired_bootstrap(a, a)
    assert same["delta_NDCG@10"] == [0.0, 0.0]
    # half the users gain a hit, half are unchanged: delta 0.5, and the interval is around it, excluding 0
    mixed = paired_bootstrap(np.array([0] * 100 + [MISS] * 100), np.full(200, MISS), n_resamples=2000)
    lo, hi = mixed["delta_HR@10"]
    assert mixed["delta"]["HR@10"] == 0.5 and 0.4 < lo < 0.5 < hi < 0.6
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, a[:3])


def test_load_ranks_from_predictions_and_records(tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps(r) for r in [
        {"user": 1, "target": [7], "items": [3, 7, 9]}, {"user": 2, "target": [5], "items": [1, 2]}]) + "\n")
    assert load_ranks(preds) == {1: 1, 2: MISS}
    rec = tmp_path / "r.json"
    rec.write_text(json.dumps({"metrics": {}, "per_user": {"users": [1, 2], "ranks": [0, -1]}}))
    assert load_ranks(rec) == {1: 0, 2: MISS}
    # chrono: user 1 has two test cases; the case index is the key, so neither is lost
    rec.write_text(json.dumps({"metrics": {}, "per_user": {"users": [1, 1, 2], "cases": [0, 1, 2],
                                                           "ranks": [0, 4, -1]}}))
    assert load_ranks(rec) == {0: 0, 1: 4, 2: MISS}
    rec.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="no per_user ranks"):
        load_ranks(rec)
    preds.write_text('{"user": 1, "items": [1]}\n')
    with pytest.raises(ValueError, match="p.jsonl:1"):
        load_ranks(preds)


def test_compare_command_prints_the_interval(tmp_path):
    from typer.testing import CliRunner

    from dualrec.cli import app

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"metrics": {}, "per_user": {"users": list(range(40)), "ranks": [0] * 40}}))
    b.write_text(json.dumps({"metrics": {}, "per_user": {"users": list(range(10, 50)), "ranks": [-1] * 40}}))
    out = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    assert "30 users in both (20 in one file only, left out)" in out.output
    assert "delta HR@10 (A - B): +1.0000, 95 % interval [+1.0000, +1.0000]: A better" in out.output


class OracleSignal:
    """A fixed test input: high for the user's true next item (known to the test), low elsewhere; ``sign=-1``
    makes it point away from it."""

    def __init__(self, targets: dict[bytes, int], sign: float = 1.0):
        self.targets, self.sign = targets, sign

    def scores(self, histories, candidates):
        hit = np.array([[c == self.targets.get(np.asarray(h).tobytes(), -1) for c in row]
                        for h, row in zip(histories, candidates)], np.float32)
        return self.sign * hit

    def load(self) -> None:
        """Nothing to load: the targets are given."""


@pytest.fixture(scope="module")
def stage1_dir(ml1m_small, tmp_path_factory):
    from dualrec.evaluation.protocols import make_split
    from dualrec.models import build_model

    split = make_split(ml1m_small.sequences(), "strict")
    path = tmp_path_factory.mktemp("stage1") / "model"
    build_model("mostpop").fit(split.train, ml1m_small.catalog).save(path)
    return split, path


# the oracle's hit is ~3 standard deviations above its row, Stage 1's best at most ~2: at 0.5/0.5 the target is
# already first, as at 0/1, and the tie goes to the larger Stage-1 weight
@pytest.mark.parametrize("sign,expected_stage1", [(1.0, 0.5), (-1.0, 1.0)])
def test_weights_are_chosen_on_validation_and_pure_stage1_wins_against_a_bad_signal(stage1_dir, ml1m_small, sign,
                                                                                    expected_stage1):
    from dualrec.models import build_model

    split, path = stage1_dir
    cases = split.valid.head(200)
    targets = {np.asarray(h).tobytes(): int(t[0]) for h, t in zip(cases.histories, cases.targets)}
    model = build_model("fusion", {"stage1": str(path), "signals": ["llm"], "n_candidates": 10, "grid_step": 0.5})
    model.set_signal("llm", OracleSignal(targets, sign))
    model.fit(split.train, ml1m_small.catalog, valid=cases)
    assert model.config.weights["stage1"] == expected_stage1
    assert [g["weights"]["stage1"] for g in model.selection["grid"]] == [0.0, 0.5, 1.0]
    recs = model.recommend(cases.histories, 10)
    s1 = model.stage1.recommend(cases.histories, 10)
    for items, base in zip(recs.items, s1.items):
        assert sorted(items.tolist()) == sorted(base.tolist())        # the same K real items, re-ordered
    if expected_stage1 == 1.0:   # the bad signal is weighted 0: exactly Stage 1's lists
        assert [r.tolist() for r in recs.items] == [r.tolist() for r in s1.items]
    else:                        # the oracle puts every target Stage 1 had in its top 10 first
        in_top = [int(t[0]) in b for t, b in zip(cases.targets, s1.items)]
        assert [bool(r[0] == t[0]) for r, t in zip(recs.items, cases.targets)] == in_top


def test_fusion_saves_its_chosen_weights_and_reloads(stage1_dir, ml1m_small, tmp_path):
    from dualrec.models import Recommender, build_model

    split, path = stage1_dir
    model = build_model("fusion", {"stage1": str(path), "signals": ["sbert"], "n_candidates": 10,
                                   "weights": {"stage1": 0.7, "sbert": 0.3}})
    model.fit(split.train, ml1m_small.catalog, valid=split.valid)
    assert model.selection["chosen_on"] == "fixed by the config"
    cases = split.test.head(20)
    before = model.recommend(cases.histories, 15)
    model.save(tmp_path / "fused")
    loaded = Recommender.load(tmp_path / "fused")
    after = loaded.recommend(cases.histories, 15)
    assert loaded.config.weights == {"stage1": 0.7, "sbert": 0.3}
    assert [a.tolist() for a in after.items] == [b.tolist() for b in before.items]
    s1 = model.stage1.recommend(cases.histories, 15)
    assert all(a[10:].tolist() == b[10:].tolist() for a, b in zip(after.items, s1.items))  # past K: Stage 1's
    with pytest.raises(ValueError, match="unknown signal"):
        build_model("fusion", {"stage1": str(path), "signals": ["magic"]})
