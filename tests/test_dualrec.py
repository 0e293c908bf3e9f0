"""DUALRec end to end with real parts: Stage 1 on real MovieLens rows, the embedded Gemma through llama.cpp, SBERT
re-ranking, the beyond-the-paper modes, and save/load like any Recommender."""

from __future__ import annotations

import numpy as np
import pytest

from dualrec.evaluation.evaluator import evaluate
from dualrec.evaluation.protocols import make_split
from dualrec.models import Recommender, build_model


@pytest.fixture(scope="module")
def split(ml1m_small):
    return make_split(ml1m_small.sequences(), "paper")


def test_sbert_reranker_orders_by_cosine(ml1m_top1000, tmp_path):
    from dualrec.llm.rerank import SBERTReranker

    full = ml1m_top1000.catalog
    by_title = dict(zip(full.items["title"], full.ids))
    toy, toy2 = by_title["Toy Story (1995)"], by_title["Toy Story 2 (1999)"]
    others = [by_title["Schindler's List (1993)"], by_title["Heat (1995)"], toy2]
    cat = full.subset(list(dict.fromkeys([toy, *others, *full.ids[:100].tolist()])))  # small: fast to embed
    rr = SBERTReranker(cache_dir=tmp_path)
    items, sims = rr.rerank(cat, others, [toy])
    assert items[0] == toy2 and np.all(np.diff(sims) <= 0)
    q = rr.encode(cat.titles([toy] + others))                  # the encoder, called directly
    np.testing.assert_allclose(sorted(q[1:] @ q[0], reverse=True), sims, atol=1e-5)
    assert list((tmp_path / "embeddings").glob("sbert-*.npy"))   # catalog embeddings cached on disk, once
    again = SBERTReranker(cache_dir=tmp_path)
    again._model = "not loaded"                                 # a cached catalog needs no encoder at all
    assert np.array_equal(again.rerank(cat, others, [toy])[0], items)


def test_pipeline_with_the_embedded_llm_counts_everything(split, ml1m_small, tmp_path):
    from dualrec.llm.backends import LlamaCppBackend

    cat = ml1m_small.catalog
    model = build_model("dualrec", {"stage1": "mostpop", "max_new_tokens": 48, "backend": {"kind": "llama_cpp",
                                                                                           "n_threads": 1}})
    model.fit(split.train, cat)
    model.backend = LlamaCppBackend(n_threads=1, cache=tmp_path / "responses.sqlite")  # a fresh response cache
    cases = split.test.head(3)
    res = evaluate(model, cases, cat, ks=(1, 5, 10), progress=False)
    extras = res.recommendations.extras
    for e, items, h in zip(extras, res.recommendations.items, cases.histories):
        assert e["llm_text"] is not None and e["lstm_title"]
        assert not np.isin(items, h).any()                        # never an item of the history
        if not e["fallback"]:
            assert e["generated"] >= len(items) and e["ungrounded"] == len(e["ungrounded_titles"])
    assert res.counts["generated_titles"] == sum(e["generated"] for e in extras)
    assert res.counts["ungrounded_titles"] == sum(e["ungrounded"] for e in extras)
    assert res.metrics["hallucination_rate"] == (res.counts["ungrounded_titles"] / res.counts["generated_titles"]
                                                 if res.counts["generated_titles"] else 0.0)
    assert res.timings["stage_llm_s_per_user"] > 0
    again = model.recommend(cases.histories, 10)                 # the second run is served from the cache
    assert all(e["cached"] for e in again.extras)
    assert [a.tolist() for a in again.items] == [b.tolist() for b in res.recommendations.items]
    model.close()

    model.save(tmp_path / "saved")
    loaded = Recommender.load(tmp_path / "saved")
    assert loaded.name == "dualrec" and loaded.stage1.name == "mostpop"
    assert loaded.config == model.config
    loaded.backend = LlamaCppBackend(n_threads=1, cache=tmp_path / "responses.sqlite")
    re = loaded.recommend(cases.histories, 10)
    assert [a.tolist() for a in re.items] == [b.tolist() for b in res.recommendations.items]
    loaded.close()


def test_candidate_scoring_mode_reorders_stage1_candidates(split, ml1m_small):
    cat = ml1m_small.catalog
    model = build_model("dualrec", {"stage1": "mostpop", "mode": "score", "n_candidates": 6, "cache": False,
                                    "backend": {"kind": "hf", "dtype": "bfloat16"}})
    model.fit(split.train, cat)
    cases = split.test.head(2)
    recs = model.recommend(cases.histories, 10)
    s1 = model.stage1.recommend(cases.histories, 10)
    for items, scores, cand, e in zip(recs.items, recs.scores, s1.items, recs.extras):
        assert sorted(items.tolist()) == sorted(cand[:6].tolist())   # the same 6 real items, re-ordered
        assert np.all(np.diff(scores) <= 0) and np.all(scores < 0)   # by log-likelihood
        assert not e["fallback"] and e["ungrounded"] == 0


def test_rank_mode_orders_stage1_candidates_as_the_fusion_with_the_llm_alone(split, ml1m_small):
    """mode=rank and the fusion model weighted LLM 1 / Stage 1 0 read the same verbalizer scores (one RankMode):
    the same users get the same lists, and each is Stage 1's top n_candidates re-ordered."""
    cat = ml1m_small.catalog
    backend = {"kind": "hf", "model_name": "embedded", "dtype": "bfloat16", "n_threads": 1}
    model = build_model("dualrec", {"stage1": "mostpop", "mode": "rank", "n_candidates": 20, "cache": False,
                                    "backend": backend})
    model.fit(split.train, cat)
    cases = split.test.head(3)
    recs = model.recommend(cases.histories, 20)
    s1 = model.stage1.recommend(cases.histories, 20)
    fusion = build_model("fusion", {"stage1": "mostpop", "signals": ["llm"], "cache": False, "backend": backend,
                                    "weights": {"stage1": 0.0, "llm": 1.0}})
    fusion.stage1 = model.stage1
    fusion.catalog = cat
    fused = fusion.recommend(cases.histories, 20)
    for items, scores, cand, other, e in zip(recs.items, recs.scores, s1.items, fused.items, recs.extras):
        assert sorted(items.tolist()) == sorted(cand.tolist()) and np.all(np.diff(scores) <= 0)
        assert items.tolist() == other.tolist() and e["answered"] and not e["fallback"]


@pytest.mark.parametrize("options", [{"mode": "score"}, {"mode": "rank"}, {"adapter": "models/some-adapter"}])
def test_a_logit_mode_or_an_adapter_on_a_text_backend_is_refused_not_swapped(options):
    with pytest.raises(ValueError, match=r"needs backend.kind=hf \(transformers\), got 'llama_cpp': set "
                                         r"model.backend.kind=hf"):
        build_model("dualrec", {"stage1": "mostpop", "backend": {"kind": "llama_cpp"}, **options})


def test_hallucination_rate_counts_fakes_exactly_for_a_fixed_answer(split, ml1m_small):
    """Every user gets the same answer: two real films, a sequel that does not exist, a remake, an ambiguous title
    and prose. 2 of the 5 titles are hallucinations; the ambiguous one is neither ranked nor counted as one."""
    from dualrec.llm.backends import Completion, LLMBackend

    answer = ("Here are my picks:\n1. The Matrix (1999)\n2. Toy Story 4\n3. Planet of the Apes (2001)\n"
              "4. Fargo\n5. Star Wars\nEnjoy!")

    class FixedAnswer(LLMBackend):
        def identity(self):
            return {"kind": "fixed"}

        def _generate(self, prompts, params):
            return [Completion(answer, finish_reason="stop") for _ in prompts]

    cat = ml1m_small.catalog
    model = build_model("dualrec", {"stage1": "mostpop", "rerank": False, "n_recommend": 5})
    model.fit(split.train, cat)
    model.backend = FixedAnswer()
    cases = split.test.head(4)
    res = evaluate(model, cases, cat, ks=(1, 5), progress=False)
    counts = res.counts
    assert (counts["generated_titles"], counts["ungrounded_titles"], counts["ambiguous_titles"]) == (20, 8, 4)
    assert res.metrics["hallucination_rate"] == 0.4
    e = res.recommendations.extras[0]
    assert e["ungrounded_titles"] == ["Toy Story 4", "Planet of the Apes (2001)"]
    matrix, fargo = 2571, 608
    for items, h in zip(res.recommendations.items, cases.histories):
        assert items.tolist() == [i for i in (matrix, fargo) if i not in h]
