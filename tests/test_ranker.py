"""The verbalizer ranker on the embedded model (real weights, tiny sizes): its scores are the label-token logits
of a plain forward pass, batching and the slot permutation change nothing, and its LoRA objective trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualrec.llm.ranker import RankerTask, candidate_order, index_labels, ranker_examples


def test_labels_and_candidate_order():
    assert index_labels(4) == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="1..26"):
        index_labels(27)
    h = np.array([1, 2, 3])
    order = candidate_order(h, 20, seed=42)
    assert sorted(order.tolist()) == list(range(20))                          # a permutation
    assert order.tolist() == candidate_order(h.copy(), 20, seed=42).tolist()  # seeded by history and seed only
    assert order.tolist() != candidate_order(np.array([1, 2, 4]), 20, seed=42).tolist()


def test_training_examples_put_the_target_behind_its_label(ml1m_small):
    from dualrec.evaluation.protocols import make_split
    from dualrec.models import build_model

    split = make_split(ml1m_small.sequences(), "strict")
    pop = build_model("mostpop").fit(split.train, ml1m_small.catalog)
    examples, counts = ranker_examples(pop, split.train, ml1m_small.catalog, k=20, positions=2, max_users=60)
    assert counts["users_used"] == 60 and counts["prefixes"] == 120
    assert counts["target_in_stage1_top_k"] + counts["target_not_in_top_k"] + counts["fewer_than_k_candidates"] \
        == 120 and len(examples) == counts["target_in_stage1_top_k"] > 0
    seqs = {int(u): s for u, s in zip(split.train.users, split.train.to_list())}
    for e in examples:
        label = index_labels(20)[e.label]
        line = next(x for x in e.prompt.splitlines() if x.startswith(f"{label}. "))
        titles = {ml1m_small.catalog.title(int(i)) for i in seqs[e.user][-2:]}   # the two prefixes' targets
        assert line[len(label) + 2:] in titles


@pytest.fixture(scope="module")
def lm():
    from dualrec.llm.hf import load_causal_lm

    return load_causal_lm(dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def cases(ml1m_top1000):
    cat = ml1m_top1000.catalog
    histories = [cat.ids[[0, 5, 9]], cat.ids[[30, 2, 44, 8, 71, 12]]]
    candidates = np.stack([cat.ids[[100, 101, 102, 103]], cat.ids[[200, 17, 300, 3]]])
    return cat, histories, candidates


def test_scores_are_the_label_logits_of_a_plain_forward_pass(lm, cases, tmp_path):
    import torch

    from dualrec.llm.cache import ResponseCache
    from dualrec.llm.ranker import VerbalizerRanker, label_token_ids

    model, tok = lm
    cat, histories, candidates = cases
    cache = ResponseCache(tmp_path / "logits.sqlite")
    ranker = VerbalizerRanker(model, tok, cat, batch_size=2, cache=cache, identity={"model": "embedded-fp32"})
    scores = ranker.scores(histories, candidates)                 # both users in one left-padded pass
    prompts, orders = ranker.prompts(histories, candidates)
    labels = label_token_ids(tok, 4)
    for u, prompt in enumerate(prompts):                           # each alone, unpadded, whole LM head
        with torch.no_grad():
            logits = model(**tok(prompt, return_tensors="pt")).logits[0, -1, labels].numpy()
        np.testing.assert_allclose(scores[u, orders[u]], logits, atol=1e-3)
    assert len(cache) == 2
    again = VerbalizerRanker(None, tok, cat, cache=cache, identity={"model": "embedded-fp32"})
    np.testing.assert_array_equal(again.scores(histories, candidates), scores)   # read back: no model needed


def test_ranker_lora_objective_is_the_label_cross_entropy_and_trains(lm, cases, tmp_path):
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from dualrec.llm.finetune import finetune
    from dualrec.llm.ranker import RankExample, VerbalizerRanker, label_token_ids

    model, tok = lm
    cat, histories, candidates = cases
    prompts, orders = VerbalizerRanker(model, tok, cat).prompts(histories, candidates)
    examples = [RankExample(prompts[0], 2, 1), RankExample(prompts[1], 0, 2)]
    task = RankerTask(examples, k=4)
    task.tokenize(tok, 512)
    with torch.no_grad():
        loss = task.loss(model, [0, 1], tok.pad_token_id, "cpu").item()
        rows = [model(**tok(p, return_tensors="pt")).logits[0, -1, label_token_ids(tok, 4)] for p in prompts]
        expected = F.cross_entropy(torch.stack(rows), torch.tensor([2, 0]), reduction="sum").item()
    assert loss == pytest.approx(expected, abs=1e-3)

    out = finetune(RankerTask(examples, k=4), {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "lr": 1e-3,
                                               "dtype": "float32", "layers_to_transform": [17], "progress": False},
                   tmp_path / "ranker")
    report = json.loads((out / "finetune.json").read_text())
    assert report["task"] == "RankerTask" and report["steps"] == 2 and len(report["losses"]) == 2
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(".layers.17." in k for k in weights)        # LoRA on the top layer only
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
