"""Log-likelihood of answer tokens, computed where it is needed only; and candidate scoring (beyond the paper).

The embedded model's vocabulary has 262,144 tokens, so the LM head dominates time and memory: a full
``model(**batch).logits`` on 4x256 tokens is a 1 GB tensor. :func:`token_logprobs` runs the decoder, keeps the hidden
states of the positions whose next token we score, and applies the LM head to those rows only. LoRA training
(``finetune.py``) and candidate scoring share it.

Candidate scoring (the LLM's list as a real ranking): given the Stage-2 prompt (ending where the answer's
first title starts, after "1."), each of the Stage-1 model's top-N candidates is scored by
``log p(" Title (Year)" | prompt)``, the sum over its tokens. The prompt is encoded ONCE per user; its KV cache is
repeated for the N candidates, which then run as one batch of short sequences (the prompt is not recomputed N
times); a test set is scored several users per pass (:func:`score_candidate_lists`). Candidates come back ordered by
that score: a ranking of N distinct real items, nothing hallucinated.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def model_parts(model):
    """(decoder, lm_head, final_logit_softcapping) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def soft_cap(z, cap: float | None):
    """The model's final logit soft-capping (``cap * tanh(z / cap)``, Gemma 2/3), or ``z`` unchanged without one."""
    return torch.tanh(z / cap) * cap if cap else z


def log_normaliser(model, hidden, chunk: int = 16384):
    """``logsumexp`` over the vocabulary of the logits of decoder hidden states ``[M, H]`` (with the model's final
    soft-capping, if any), in fp32, one vocabulary slice of the LM head at a time, then over the slices: the
    ``[M, V]`` fp32 logits are never written out whole. At 262k tokens, converting them to fp32 and reading them back
    for the max and the exponentials costs more than the matrix product; slices that stay in the CPU's cache cost
    less (bench/bench_llm.py measures it). Exact up to fp32 rounding; differentiable."""
    _, head, cap = model_parts(model)
    hidden = hidden.contiguous()
    parts = []
    for lo in range(0, head.weight.shape[0], chunk):
        z = F.linear(hidden, head.weight[lo:lo + chunk],
                     None if head.bias is None else head.bias[lo:lo + chunk]).float()
        parts.append(torch.logsumexp(soft_cap(z, cap), dim=-1))
    return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)


def target_logits(model, hidden, targets):
    """fp32 logits of the tokens ``targets [M]`` only (dot products with their LM-head rows), from hidden states
    ``[M, H]``; soft-capped like the model's."""
    _, head, cap = model_parts(model)
    z = (hidden.float() * head.weight[targets].float()).sum(-1)
    if head.bias is not None:
        z = z + head.bias[targets].float()
    return soft_cap(z, cap)


def token_logprobs(model, hidden, targets):
    """``log p(targets)`` from decoder hidden states ``[M, H]`` (the rows that predict ``targets [M]``): the target's
    logit minus the log-normaliser, without writing out the ``[M, V]`` logits."""
    return target_logits(model, hidden, targets) - log_normaliser(model, hidden)


def answer_logprobs(model, input_ids, attention_mask, answer_mask):
    """Per-token ``log p`` of every position flagged in ``answer_mask`` (``[B, T]`` bool, the answer tokens) given
    all tokens before it, in one decoder pass. Returns ``(logprobs [M], row index [M])``; differentiable."""
    decoder, _, _ = model_parts(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    predict = answer_mask[:, 1:]                       # position t predicts token t+1
    rows = predict.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows]
    targets = input_ids[:, 1:][rows]
    return token_logprobs(model, h, targets), rows[0]


def prompt_pass(model, input_ids, attention_mask, use_cache: bool = True):
    """The decoder over a batch of left-padded prompts, with their KV cache (``.cache``, unless ``use_cache`` is
    False) and hidden states (``.last_hidden_state``); no LM head (at 262k tokens it would cost more than the
    decoder). Positions count real tokens only, as ``generate`` numbers them, so a continuation from this cache
    matches one from the prompts."""
    decoder, _, _ = model_parts(model)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=use_cache)


def candidate_texts(catalog, items: Sequence[int]) -> list[str]:
    """What a candidate looks like right after "1." in an answer: ``" Title (Year)"``."""
    return [" " + t for t in catalog.titles(items)]


def score_candidates(model, tokenizer, prompt: str, candidates: Sequence[str], length_normalise: bool = False
                     ) -> np.ndarray:
    """``sum log p(candidate tokens | prompt)`` for each candidate of one prompt (optionally divided by its token
    count): :func:`score_candidate_lists` for a single user."""
    return score_candidate_lists(model, tokenizer, [prompt], [candidates], length_normalise)[0]


def score_candidate_lists(model, tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                          length_normalise: bool = False) -> list[np.ndarray]:
    """``sum log p(candidate tokens | prompt)`` for every candidate of every prompt, in two decoder passes.

    The prompts run once, as one left-padded batch (:func:`prompt_cache` numbering); each prompt's KV cache is
    repeated for its candidates, and all candidates of all prompts run as one right-padded batch on top of those
    caches. One user at a time, a candidate batch is 20 rows of a few tokens: too small to keep the CPU's matrix units
    busy, so scoring a test set batches users (DualRec's ``score_batch``). The LM head is applied to the rows that
    predict a candidate token only, one vocabulary slice at a time (:func:`log_normaliser`).
    """
    out = [np.zeros(0, np.float32) for _ in prompts]
    users = [u for u, c in enumerate(candidates) if len(c)]
    if not users:
        return out
    decoder, _, _ = model_parts(model)
    device = next(model.parameters()).device
    enc = tokenizer([prompts[u] for u in users], return_tensors="pt", padding=True).to(device)
    cand = [tokenizer(list(candidates[u]), add_special_tokens=False).input_ids for u in users]
    owner = torch.tensor([b for b, c in enumerate(cand) for _ in c], device=device)   # candidate row -> prompt row
    flat = [ids for c in cand for ids in c]
    n, t_max = len(flat), max(len(c) for c in flat)
    ids = torch.full((n, t_max), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, t_max), dtype=torch.long)
    for i, c in enumerate(flat):
        ids[i, :len(c)] = torch.tensor(c)
        mask[i, :len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    p_mask = enc["attention_mask"]
    with torch.inference_mode():
        prompt = prompt_pass(model, enc["input_ids"], p_mask)
        last = prompt.last_hidden_state[:, -1]
        first = target_logits(model, last[owner], ids[:, 0]) - log_normaliser(model, last)[owner]   # token 0 | prompt
        cache = prompt.cache
        cache.batch_select_indices(owner)
        full_mask = torch.cat([p_mask[owner], mask], dim=1)
        pos = p_mask.sum(1)[owner][:, None] + torch.arange(t_max, device=device)[None]
        hidden = decoder(input_ids=ids, attention_mask=full_mask, cache=cache, position_ids=pos,
                         use_cache=True).last_hidden_state
        rows = mask[:, 1:].bool().nonzero(as_tuple=True)
        rest = token_logprobs(model, hidden[:, :-1][rows], ids[:, 1:][rows])
        total = first.clone()
        total.index_add_(0, rows[0], rest)
    total = total.cpu().numpy()
    if length_normalise:
        total = total / mask.sum(1).cpu().numpy()
    bounds = np.cumsum([0] + [len(c) for c in cand])
    for b, u in enumerate(users):
        out[u] = total[bounds[b]:bounds[b + 1]].astype(np.float32)
    return out
