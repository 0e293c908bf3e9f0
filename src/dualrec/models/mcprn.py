"""MCPRN, Mixture-Channel Purpose Routing Networks (Wang, Hu, Wang, Sheng, Orgun & Cao, IJCAI 2019), in one file.

The model (paper section 3; its PDF was not retrievable offline, so parts are named, not numbered; the structure
was checked against the public PyTorch reimplementation tingyunw/MCPRN, built on SR-GNN's code):

* **purpose router**: each item's purpose distribution over ``K`` channels,
  ``PD_i = softmax(W_c^T e_i / tau)``, a temperature softmax that approaches one-hot as ``tau -> 0``;
* **purpose-specific recurrent units** (PSRU), one per channel with its own weights: a GRU whose update gate is
  scaled by the item's weight for that channel (the *concentration gate* ``g_t^k = PD_t^k * z_t^k``), so an item
  of another purpose leaves the channel's state almost unchanged:
  ``r = sigmoid(W_r e_t + U_r h_{t-1})``, ``z = sigmoid(W_z e_t + U_z h_{t-1})``,
  ``h~ = tanh(W_h e_t + U_h (r * h_{t-1}))``, ``h_t^k = (1 - g_t^k) * h_{t-1}^k + g_t^k * h~``;
* **multi-purpose session representation**: the channels' final states mixed by the *candidate* item's own purpose
  distribution, ``s_j = sum_k PD_j^k h_T^k``, and the score ``e_j^T s_j``.

The ``K`` channels run as one batched recurrence (``[K, B, H]`` states, one ``baddbmm`` per step for all channels);
the input projections of every channel are one matmul over the item table, gathered per step. Left padding is
exact: a pad gets purpose weight 0, so it never moves a channel's zero initial state.

Defaults: K = 3 channels, embedding = hidden = 128, Adam lr 1e-3, L2 1e-5, batch 50, temperature ``tau = 0.1`` and
every parameter ~ U(-1/sqrt(d), 1/sqrt(d)), all as in the reimplementation (the paper's own values could not be
checked offline). Departures: the reimplementation scores with a sigmoid and trains on one positive against sampled
negatives (binary cross-entropy); here the shared full-softmax cross-entropy over the 1,000-item catalog, as every
neural baseline here; the initial state is 0 (the reimplementation draws it at random each batch); no hard 0.01
threshold on the concentration gate (the reimplementation zeroes ``g`` below 0.01, which also blocks its gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class MCPRNConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 128     # item embedding = PSRU hidden size, as in the reimplementation
    channels: int = 3            # K purposes
    tau: float = 0.1             # router temperature
    batch_size: int = 50
    weight_decay: float = 1e-5


class MCPRNNet(nn.Module):
    """The network: item rows ``[B, L]`` (pad row ``n_items``) -> logits over the catalog."""

    def __init__(self, c: MCPRNConfig, n_items: int):
        super().__init__()
        n, d, K = n_items, c.embedding_dim, c.channels
        self.pad, self.dim, self.channels, self.tau = n, d, K, c.tau
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.router = nn.Linear(d, K, bias=False)                # W_c
        self.w_ih = nn.Parameter(torch.empty(d, K * 3 * d))     # [W_r; W_z; W_h] of every channel
        self.b_ih = nn.Parameter(torch.empty(K * 3 * d))
        self.w_hh = nn.Parameter(torch.empty(K, d, 3 * d))      # [U_r; U_z; U_h] per channel
        self.b_hh = nn.Parameter(torch.empty(K, 1, 3 * d))
        for p in self.parameters():
            nn.init.uniform_(p, -d ** -0.5, d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def purposes(self, emb):
        """Purpose distribution ``PD`` over the ``K`` channels, ``[..., K]``."""
        return torch.softmax(self.router(emb) / self.tau, dim=-1)

    def channel_states(self, rows):
        """Final PSRU state of every channel, ``[K, B, d]``."""
        B, T = rows.shape
        n, d, K = self.pad, self.dim, self.channels
        emb = self.item_emb.weight
        w = self.purposes(emb)[rows].masked_fill((rows == n).unsqueeze(-1), 0.0)   # [B, T, K]; pads: 0
        # input projections of every step and channel at once, computed on the item table (n + 1 rows, not
        # B * T) and gathered, as [T, K, B, 3d]; unbind (not gi[t]) so the backward pass stacks the per-step
        # gradients instead of adding T full-size zero tensors
        gi = (emb @ self.w_ih + self.b_ih)[rows.T].view(T, B, K, 3 * d).transpose(1, 2).unbind(0)
        gates = w.permute(1, 2, 0).unsqueeze(-1).unbind(0)                    # T x [K, B, 1]
        h = emb.new_zeros(K, B, d)
        for gi_t, g_t in zip(gi, gates):
            i_rz, i_h = gi_t.split([2 * d, d], -1)
            h_rz, h_h = torch.baddbmm(self.b_hh, h, self.w_hh).split([2 * d, d], -1)
            r, z = torch.sigmoid(i_rz + h_rz).chunk(2, -1)
            cand = torch.tanh(i_h + r * h_h)
            h = h + g_t * z * (cand - h)           # concentration gate g * z
        return h

    def encode(self, rows):
        """The ``K`` channel states side by side, ``[B, K * d]`` (the session's purpose-specific parts)."""
        return self.channel_states(rows).transpose(0, 1).reshape(len(rows), self.channels * self.dim)

    def forward(self, rows):
        e = self.item_emb.weight[:self.pad]                # [n, d]
        per_channel = self.channel_states(rows) @ e.T      # [K, B, n]: e_j . h^k
        return (self.purposes(e).T.unsqueeze(1) * per_channel).sum(0)   # sum_k PD_j^k e_j . h^k


class MCPRN(NeuralRecommender):
    name = "mcprn"
    config_class = MCPRNConfig

    def build_network(self):
        return MCPRNNet(self.config, len(self.catalog))
