"""The paper-table baselines (issue 4): every model through the same checks, on real MovieLens rows.

One parametrised test per property, over all baselines: a short fit on the first 600 users must beat MostPop's
NDCG@10 by 20 % on their held-out (strict leave-one-out) items; on the generated dataset (no MovieLens needed), save +
load gives the same rankings and the list invariants hold. Then checks of the two hand-vectorised solvers against
plain references (SKNN by sets, SLIM by scikit-learn).
"""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.evaluation.evaluator import evaluate
from dualrec.evaluation.protocols import make_split
from dualrec.models import Recommender, build_model

# short fits: enough to learn sequential signal on 600 users, seconds each on 2 CPU cores (higher learning rates
# and less dropout than the papers' full runs, which need 10+ epochs over all windows)
SHORT_FIT = {
    "sknn": {},
    "slim": {"l1": 0.5, "l2": 100.0, "max_iter": 30},
    "fpmc": {"epochs": 2, "max_windows": 15000, "progress": False},
    "gru4rec": {"epochs": 2, "max_windows": 15000, "lr": 0.005, "progress": False},
    "narm": {"epochs": 3, "max_windows": 15000, "lr": 0.01, "ct_dropout": 0.25, "progress": False},
    "stamp": {"epochs": 4, "max_windows": 15000, "lr": 0.01, "progress": False},
    "sasrec": {"epochs": 2, "max_windows": 8000, "lr": 0.005, "progress": False},
    # the paper's defaults (d 300, dropout 0.5, lr 1e-3); plus the one-time SBERT encoding of 1,000 item texts
    "unisrec": {"epochs": 3, "max_windows": 10000, "progress": False},
    "gcegnn": {"epochs": 2, "max_windows": 6000, "lr": 0.005, "progress": False},
    # at a short fit's higher learning rate HIDE's x10 logit scale (w_k) stays at the uniform loss; full runs keep it
    "hide": {"epochs": 2, "max_windows": 6000, "lr": 0.005, "score_scale": 1.0, "progress": False},
    "mcprn": {"epochs": 2, "max_windows": 10000, "lr": 0.005, "batch_size": 128, "progress": False},
    "attenmixer": {"epochs": 2, "max_windows": 10000, "lr": 0.005, "batch_size": 256, "progress": False},
}
BASELINES = list(SHORT_FIT)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small models on a shared 2-core machine: two intra-op threads spin against other jobs (8x slower measured
    for GRU4Rec under load), one thread is never much slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split(ml1m_small):
    return make_split(ml1m_small.sequences(), "strict")


@pytest.fixture(scope="module")
def mostpop_ndcg(split, ml1m_small):
    model = build_model("mostpop").fit(split.train, ml1m_small.catalog)
    return evaluate(model, split.test, ml1m_small.catalog, progress=False).metrics["NDCG@10"]


def fitter(split, catalog):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_model(name, SHORT_FIT[name]).fit(split.train, catalog, valid=split.valid)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def fitted(split, ml1m_small):
    return fitter(split, ml1m_small.catalog)


@pytest.fixture(scope="module")
def tiny_split(synthetic):
    return make_split(synthetic.sequences(), "strict")


@pytest.fixture(scope="module")
def fitted_tiny(tiny_split, synthetic):
    return fitter(tiny_split, synthetic.catalog)


@pytest.mark.parametrize("name", BASELINES)
def test_short_fit_beats_mostpop_on_held_out_items(name, fitted, split, ml1m_small, mostpop_ndcg):
    result = evaluate(fitted(name), split.test, ml1m_small.catalog, progress=False)
    assert result.counts["users"] == len(split.test) and result.counts["lists_shorter_than_max_k"] == 0
    # measured NDCG@10 over MostPop's 0.031: 1.33x (fpmc, the lowest) to 3.3x (unisrec); every short fit clears 1.2x
    assert result.metrics["NDCG@10"] >= 1.2 * mostpop_ndcg, (name, result.metrics["NDCG@10"], mostpop_ndcg)


@pytest.mark.parametrize("name", BASELINES)
def test_save_and_load_give_identical_rankings(name, fitted_tiny, tiny_split, tmp_path):
    model = fitted_tiny(name)
    histories = tiny_split.test.histories
    before = model.recommend(histories, k=20)
    loaded = Recommender.load(model.save(tmp_path / name))
    after = loaded.recommend(histories, k=20)
    assert type(loaded) is type(model) and loaded.config == model.config
    for a, b, sa, sb in zip(before.items, after.items, before.scores, after.scores):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BASELINES)
def test_lists_respect_k_exclude_history_and_are_sorted(name, fitted_tiny, tiny_split, synthetic):
    model = fitted_tiny(name)
    histories = tiny_split.test.histories + [np.zeros(0, np.int64), tiny_split.test.histories[0][-1:]]
    for k in (1, 7):
        recs = model.recommend(histories, k=k)
        assert len(recs) == len(histories)
        for h, items, scores in zip(histories, recs.items, recs.scores):
            assert len(items) == k and len(set(items.tolist())) == k
            assert not np.isin(items, h).any()
            assert synthetic.catalog.has(items).all()
            assert np.all(np.diff(scores) <= 0)


def test_sknn_matches_a_set_based_reference(split, ml1m_small):
    """score(i) = sum of cosine similarities of the k most similar training users holding i (Jannach 2017)."""
    model = build_model("sknn", {"k": 20}).fit(split.train, ml1m_small.catalog)
    cat = ml1m_small.catalog
    train_sets = [set(cat.rows(split.train[u]).tolist()) for u in range(len(split.train))]
    for h in split.test.histories[:5]:
        q = set(cat.rows(h).tolist())
        sims = np.array([len(q & s) / np.sqrt(len(q) * len(s)) if s else 0.0 for s in train_sets])
        top = np.argsort(-sims, kind="stable")[:20]
        expected = np.zeros(len(cat))
        for u in top:
            expected[list(train_sets[u])] += sims[u]
        got = model.score([cat.rows(h)]).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)   # + the 1e-6 popularity tie-break


def test_slim_admm_matches_sklearn_elastic_net_per_column(split, ml1m_small):
    """Our all-columns ADMM solves the same problem as SLIM's per-column positive elastic net."""
    from sklearn.linear_model import ElasticNet

    model = build_model("slim", {"l1": 2.0, "l2": 20.0, "max_iter": 150, "tol": 1e-6})
    model.fit(split.train, ml1m_small.catalog)
    cat = ml1m_small.catalog
    a = np.zeros((len(split.train), len(cat)))
    for u in range(len(split.train)):
        a[u, cat.rows(split.train[u])] = 1.0
    n_users = a.shape[0]
    w = model.weights.numpy()
    assert (w >= 0).all() and np.all(np.diag(w) == 0)
    for j in (0, 10, 200):   # popular and less popular items
        x = a.copy()
        x[:, j] = 0.0        # diag(W) = 0: an item may not predict itself
        alpha = (2.0 + 20.0) / n_users
        ref = ElasticNet(alpha=alpha, l1_ratio=2.0 / 22.0, positive=True, fit_intercept=False, tol=1e-10,
                         max_iter=20000).fit(x, a[:, j]).coef_
        np.testing.assert_allclose(w[:, j], ref, atol=1e-3)
        assert np.abs(w[:, j]).sum() > 0


def test_gcegnn_graphs_match_loop_references(split, ml1m_small):
    """The vectorised global graph equals the authors' build_graph.py loop (counts within 3 steps, both directions,
    heaviest 12); the batched session graph equals per-row np.unique + consecutive pairs."""
    import torch

    from dualrec.models.gcegnn import global_graph, session_nodes, transitions

    cat = ml1m_small.catalog
    n = len(cat)
    seqs = [cat.rows(split.train[u]) for u in range(40)]
    adj, weight = global_graph(seqs, n, 3, 12)
    counts = [dict() for _ in range(n)]
    for s in seqs:
        for k in range(1, 4):
            for a, b in zip(s[:-k], s[k:]):
                counts[a][b] = counts[a].get(b, 0) + 1
                counts[b][a] = counts[b].get(a, 0) + 1
    for i in range(n):
        top = sorted(counts[i].items(), key=lambda kv: (-kv[1], kv[0]))[:12]
        assert adj[i, :len(top)].tolist() == [j for j, _ in top] and (adj[i, len(top):] == n).all()
        assert weight[i, :len(top)].tolist() == [w for _, w in top] and (weight[i, len(top):] == 0).all()
    assert (adj[n] == n).all() and (weight[n] == 0).all()

    rows = torch.full((6, 8), n)
    for r, s in enumerate([seqs[0][:8], seqs[1][:3], [5, 7, 5, 9, 7], [], [4], [3, 3, 2]]):
        if len(s):
            rows[r, 8 - len(s):] = torch.as_tensor(np.asarray(s))
    nodes, alias = session_nodes(rows, n)
    out = transitions(rows, alias, nodes.shape[1], n)
    for r in range(len(rows)):
        real = rows[r][rows[r] != n].numpy()
        uniq = np.unique(real)
        assert nodes[r, :len(uniq)].tolist() == uniq.tolist() and (nodes[r, len(uniq):] == n).all()
        assert (nodes[r][alias[r]] == rows[r]).all()
        pairs = {(int(a), int(b)) for a, b in zip(real[:-1], real[1:])}
        got = {(int(nodes[r, u]), int(nodes[r, v])) for u, v in out[r].nonzero().tolist()}
        assert got == pairs


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown option"):
        build_model("narm", {"hiden": 10})
    with pytest.raises(ValueError, match="weighting"):
        build_model("sknn", {"weighting": "cubic"})


def test_nir_three_step_prompting_with_the_embedded_llm(split, ml1m_small, tmp_path):
    """NIR end to end with the packaged Gemma (llama.cpp): candidates by user filtering, three chained prompts,
    grounded lists of length k, every title counted, and the second call answered from the response cache."""
    model = build_model("nir", {"cache": str(tmp_path / "cache"), "step_tokens": [16, 16, 48],
                                "history_in_prompt": 8})
    model.fit(split.train, ml1m_small.catalog)
    histories = split.test.histories[:1]
    recs = model.recommend(histories, k=10)
    candidates = model.candidates.recommend(histories, model.config.n_candidates).items
    for h, items, extra, cands in zip(histories, recs.items, recs.extras, candidates):
        assert len(items) == 10 and not np.isin(items, h).any() and ml1m_small.catalog.has(items).all()
        assert extra["llm_error"] is None and extra["generated"] >= extra["ungrounded"]
        # what did not come from the LLM came from the candidate set, and is counted as such
        assert np.isin(items[10 - extra["filled_from_candidates"]:], cands).all()
        assert extra["fallback"] == (extra["filled_from_candidates"] > 0)
    assert {"candidates", "llm_step1", "llm_step2", "llm_step3"} <= set(recs.timings)
    assert model.backend.stats.requests == 3 and model.backend.stats.cached == 0   # three chained prompts
    again = model.recommend(histories, k=10)
    assert model.backend.stats.cached == 3
    for a, b in zip(recs.items, again.items):
        np.testing.assert_array_equal(a, b)
    loaded = Recommender.load(model.save(tmp_path / "nir"))
    np.testing.assert_array_equal(loaded.candidates.recommend(histories, 19).items[0], candidates[0])
