"""Attention for many short continuations of a few prompts, without copying the prompts' keys and values.

Why: catalog-constrained beam search runs ``k`` beams per prompt. transformers' ``generate`` gives every beam its own
copy of its prompt's KV cache, appends one token to every copy per step (a concatenation) and re-indexes every copy
when the beams are re-ordered: per step and layer it copies beams x prompt-length keys and values. On a CPU those
copies were about half of constrained decoding's time (a profile of 8 users x 10 beams: ``cat`` and
``index_select`` 45 %, the matrix products 13 %).

How: :class:`SharedPrefix` holds each prompt's keys and values once (from an ordinary prompt pass) and each
continuation's own tokens (a few) separately. :func:`shared_prefix_attention` is registered with transformers'
``AttentionInterface``; inside :func:`attending`, the model's attention layers call it with the new token's query,
key and value, and it attends in two parts with one softmax: the prompt part as one matrix product per prompt for
all of that prompt's continuations' queries (the prompt's keys are read, never copied), and the continuation's own
tokens. Re-ordering beams re-indexes the continuations' own tokens only. Padding of left-padded prompts and a
sliding window (Gemma 3's local layers) are masked; the attention logit soft-capping of Gemma 2 is applied.

Layout: continuation row ``r`` belongs to prompt ``r // per_prompt`` (a fixed number of rows per prompt, as beam
search has), and one token per row per call.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

NAME = "dualrec_shared_prefix"


class SharedPrefix:
    """Keys/values of ``B`` prompts (from a prompt pass's cache) and of ``B * per_prompt`` continuations.

    Args:
        cache: the transformers cache of the prompt pass (left-padded prompts, :func:`dualrec.llm.scoring.prompt_cache`
            numbering); its per-layer ``keys``/``values`` are ``[B, kv_heads, P, head_dim]``.
        prompt_mask: ``[B, P]``, 1 on real prompt tokens.
        per_prompt: continuation rows per prompt.
    """

    def __init__(self, cache, prompt_mask, per_prompt: int):
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]
        self.prompt_mask = prompt_mask.bool()
        self.prompt_len = prompt_mask.sum(1)                          # [B] real tokens = next position
        self.key_pos = (prompt_mask.cumsum(-1) - 1)                   # [B, P] position of each prompt key
        self.per_prompt = per_prompt
        self.own: list[tuple | None] = [None] * len(self.prefix)      # per layer: ([R, kv, t, D], [R, kv, t, D])
        self.steps = 0                                                # tokens appended per continuation

    def positions(self):
        """``[R, 1]`` position ids of the next token of every continuation row."""
        return (self.prompt_len + self.steps).repeat_interleave(self.per_prompt)[:, None]

    def reorder(self, rows) -> None:
        """Continuation row ``i`` continues from former row ``rows[i]`` (same prompt): beams were re-ordered."""
        self.own = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.own]

    def advance(self) -> None:
        self.steps += 1

    def append(self, layer: int, key, value):
        kv = self.own[layer]
        self.own[layer] = (key, value) if kv is None else (_cat(kv[0], key), _cat(kv[1], value))
        return self.own[layer]


def _cat(a, b):
    return torch.cat([a, b], dim=2)


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            sliding_window=None, shared_prefix: SharedPrefix | None = None, **kwargs):
    """An ``AttentionInterface`` function: ``query [R, H, 1, D]`` of the continuations' new tokens against their
    prompt's keys and their own. Returns ``([R, 1, H, D], None)`` like transformers' sdpa function."""
    s = shared_prefix
    if s is None:
        raise RuntimeError(f"{NAME} attention needs shared_prefix=SharedPrefix(...) in the forward call")
    R, H, q, D = query.shape
    if q != 1:
        raise ValueError(f"{NAME} attention takes one new token per continuation, got {q}")
    own_k, own_v = s.append(module.layer_idx, key, value)           # [R, KV, t, D]
    pk, pv = s.prefix[module.layer_idx]                             # [B, KV, P, D]
    B, KV, P, _ = pk.shape
    G, k = H // KV, s.per_prompt
    scale = scaling if scaling is not None else D ** -0.5
    cap = getattr(module.config, "attn_logit_softcapping", None)

    # prompt part: every continuation query of a prompt in one product with that prompt's keys
    qg = query.view(B, k, KV, G, D).transpose(1, 2).reshape(B, KV, k * G, D)
    sp = (qg @ pk.transpose(-1, -2)).float() * scale                # [B, KV, k*G, P]
    hidden = ~s.prompt_mask                                         # padding
    if sliding_window is not None:                                  # keys out of the window of this step's query
        hidden = hidden | (s.key_pos <= (s.prompt_len + s.steps)[:, None] - sliding_window)
    # own part: each continuation's tokens (all of them precede or are the new one)
    so = (query.view(R, KV, G, D) @ own_k.transpose(-1, -2)).float() * scale   # [R, KV, G, t]
    if cap:
        sp, so = torch.tanh(sp / cap) * cap, torch.tanh(so / cap) * cap
    sp = sp.masked_fill(hidden[:, None, None, :], float("-inf"))
    sp = sp.view(B, KV, k, G, P).transpose(1, 2).reshape(R, KV, G, P)
    weights = torch.softmax(torch.cat([sp, so], dim=-1), dim=-1).to(query.dtype)
    wp = weights[..., :P].reshape(B, k, KV, G, P).transpose(1, 2).reshape(B, KV, k * G, P)
    out_p = (wp @ pv).view(B, KV, k, G, D).transpose(1, 2).reshape(R, KV, G, D)
    out = out_p + weights[..., P:] @ own_v                          # [R, KV, G, D]
    return out.reshape(R, H, 1, D).transpose(1, 2), None


@contextmanager
def attending(model):
    """Within this block, ``model``'s attention layers use :func:`shared_prefix_attention` (pass
    ``shared_prefix=`` to the forward call); the model's own implementation is restored after."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, shared_prefix_attention)
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
