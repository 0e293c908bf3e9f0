"""Log-likelihood of answer tokens, computed where it is needed only; and candidate scoring (beyond the paper).

The embedded model's vocabulary has 262,144 tokens, so the LM head dominates time and memory: a full
``model(**batch).logits`` on 4x256 tokens is a 1 GB tensor. :func:`token_logprobs` runs the decoder, keeps the hidden
states of the positions whose next token we score, and applies the LM head to those rows only. LoRA training
(``finetune.py``) and candidate scoring share it.

Candidate scoring (issue 3, "make the LLM's list a real ranking"): given the Stage-2 prompt (ending where the answer's
first title starts, after "1."), each of the Stage-1 model's top-N candidates is scored by
``log p(" Title (Year)" | prompt)``, the sum over its tokens. The prompt is encoded ONCE per user; its KV cache is
repeated for the N candidates, which then run as one batch of short sequences (the prompt is not recomputed N
times). Candidates come back ordered by that score: a ranking of N distinct real items, nothing hallucinated.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _parts(model):
    """(decoder, lm_head, final_logit_softcapping) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def logits(model, hidden):
    """fp32 logits ``[M, V]`` of decoder hidden states ``[M, H]`` (with the model's final soft-capping, if any)."""
    import torch

    _, head, cap = _parts(model)
    out = head(hidden).float()
    return torch.tanh(out / cap) * cap if cap else out


def vocab_logprobs(model, hidden):
    """``log p(token)`` over the whole vocabulary, ``[M, V]``, from decoder hidden states ``[M, H]``."""
    import torch

    return torch.log_softmax(logits(model, hidden), dim=-1)


def token_logprobs(model, hidden, targets):
    """``log p(targets)`` from decoder hidden states ``[M, H]`` (the rows that predict ``targets [M]``): the target's
    logit minus the log-normaliser, without writing out the ``[M, V]`` log-softmax."""
    import torch

    z = logits(model, hidden)
    return z.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def answer_logprobs(model, input_ids, attention_mask, answer_mask):
    """Per-token ``log p`` of every position flagged in ``answer_mask`` (``[B, T]`` bool, the answer tokens) given
    all tokens before it, in one decoder pass. Returns ``(logprobs [M], row index [M])``; differentiable."""
    decoder, _, _ = _parts(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    predict = answer_mask[:, 1:]                       # position t predicts token t+1
    rows = predict.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows]
    targets = input_ids[:, 1:][rows]
    return token_logprobs(model, h, targets), rows[0]


def prompt_cache(model, input_ids, attention_mask):
    """The KV cache of a batch of left-padded prompts, from the decoder alone (no LM head: at 262k tokens it would
    cost more than the decoder). Positions count real tokens only, as ``generate`` numbers them, so generation can
    continue from this cache exactly as from the prompts themselves."""
    decoder, _, _ = _parts(model)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    return decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                   use_cache=True).cache


def candidate_texts(catalog, items: Sequence[int]) -> list[str]:
    """What a candidate looks like right after "1." in an answer: ``" Title (Year)"``."""
    return [" " + t for t in catalog.titles(items)]


def score_candidates(model, tokenizer, prompt: str, candidates: Sequence[str], length_normalise: bool = False
                     ) -> np.ndarray:
    """``sum log p(candidate tokens | prompt)`` for each candidate (optionally divided by its token count).

    The prompt runs once; its KV cache is repeated for the candidates, which run as one right-padded batch.
    """
    import torch

    if not len(candidates):
        return np.zeros(0, np.float32)
    decoder, _, _ = _parts(model)
    device = next(model.parameters()).device
    p_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    cand = tokenizer(list(candidates), add_special_tokens=False).input_ids
    n, t_max = len(cand), max(len(c) for c in cand)
    ids = torch.full((n, t_max), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, t_max), dtype=torch.long)
    for i, c in enumerate(cand):
        ids[i, :len(c)] = torch.tensor(c)
        mask[i, :len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    P = p_ids.shape[1]
    with torch.inference_mode():
        out = decoder(input_ids=p_ids, use_cache=True)
        cache = out.cache
        cache.batch_repeat_interleave(n)
        first = vocab_logprobs(model, out.last_hidden_state[:, -1])[0, ids[:, 0]]   # token 0 | prompt: one row
        full_mask = torch.cat([torch.ones((n, P), dtype=torch.long, device=device), mask], dim=1)
        pos = torch.arange(P, P + t_max, device=device)[None].expand(n, -1)
        hidden = decoder(input_ids=ids, attention_mask=full_mask, cache=cache, position_ids=pos,
                         use_cache=True).last_hidden_state
        rows = mask[:, 1:].bool().nonzero(as_tuple=True)
        rest = token_logprobs(model, hidden[:, :-1][rows], ids[:, 1:][rows])
        total = first.clone()
        total.index_add_(0, rows[0], rest)
    total = total.float().cpu().numpy()
    if length_normalise:
        total = total / mask.sum(1).cpu().numpy()
    return total.astype(np.float32)
