"""Shared-prefix attention (constrained decoding's beams reading their prompt's keys once) against attention over
each continuation's whole sequence written out: left-padded prompts, several query heads per key head, re-ordered
rows, a sliding window that drops early prompt keys, and soft-capping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dualrec.llm.shared_prefix import SharedPrefix, shared_prefix_attention


def reference(query, keys, values, visible, scale, cap):
    """softmax(q k^T) v over one continuation's whole key sequence ``[KV, T, D]``; ``visible [T]``."""
    H, D = query.shape
    KV = keys.shape[0]
    k = keys.repeat_interleave(H // KV, dim=0)                       # [H, T, D]
    v = values.repeat_interleave(H // KV, dim=0)
    s = torch.einsum("hd,htd->ht", query, k) * scale
    if cap:
        s = torch.tanh(s / cap) * cap
    s = s.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("ht,htd->hd", torch.softmax(s, -1), v)


@pytest.mark.parametrize("window,cap", [(None, None), (6, None), (None, 50.0)])
def test_shared_prefix_attention_equals_attention_over_the_whole_sequence(window, cap):
    g = torch.Generator().manual_seed(0)
    B, per, KV, H, D, P, steps = 2, 3, 1, 4, 8, 7, 3
    R = B * per
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[1, :3] = 0                                         # the second prompt is left-padded
    prefix = SimpleNamespace(layers=[SimpleNamespace(keys=torch.randn(B, KV, P, D, generator=g),
                                                     values=torch.randn(B, KV, P, D, generator=g))])
    shared = SharedPrefix(prefix, prompt_mask, per)
    module = SimpleNamespace(layer_idx=0, config=SimpleNamespace(attn_logit_softcapping=cap))
    own_k = torch.zeros(R, KV, 0, D)
    own_v = torch.zeros(R, KV, 0, D)
    own_pos = torch.zeros(R, 0, dtype=torch.long)
    for step in range(steps):
        if step:   # beams re-ordered: rows continue other rows of the same prompt
            rows = torch.tensor([2, 0, 0, 4, 5, 3])
            shared.reorder(rows)
            own_k, own_v, own_pos = own_k[rows], own_v[rows], own_pos[rows]
        q = torch.randn(R, H, 1, D, generator=g)
        k = torch.randn(R, KV, 1, D, generator=g)
        v = torch.randn(R, KV, 1, D, generator=g)
        pos = shared.positions()
        out, _ = shared_prefix_attention(module, q, k, v, None, scaling=D ** -0.5, sliding_window=window,
                                         shared_prefix=shared)
        shared.advance()
        own_k, own_v = torch.cat([own_k, k], 2), torch.cat([own_v, v], 2)
        own_pos = torch.cat([own_pos, pos], 1)
        assert out.shape == (R, 1, H, D)
        for r in range(R):
            b = r // per
            key_pos = torch.cat([(prompt_mask[b].cumsum(0) - 1), own_pos[r]])
            visible = torch.cat([prompt_mask[b].bool(), torch.ones(step + 1, dtype=torch.bool)])
            if window is not None:
                visible &= key_pos > pos[r, 0] - window
            want = reference(q[r, :, 0], torch.cat([prefix.layers[0].keys[b], own_k[r]], 1),
                             torch.cat([prefix.layers[0].values[b], own_v[r]], 1), visible, D ** -0.5, cap)
            torch.testing.assert_close(out[r, 0], want, atol=1e-5, rtol=1e-5)


def test_positions_continue_each_prompt_from_its_real_length():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    layers = [SimpleNamespace(keys=torch.zeros(2, 1, 4, 2), values=torch.zeros(2, 1, 4, 2))]
    shared = SharedPrefix(SimpleNamespace(layers=layers), mask, 2)
    assert shared.positions().flatten().tolist() == [4, 4, 2, 2]
    shared.advance()
    assert shared.positions().flatten().tolist() == [5, 5, 3, 3]
