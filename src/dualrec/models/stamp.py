"""STAMP, Short-Term Attention/Memory Priority model (Liu, Zeng, Mokhosi & Zhang, KDD 2018), in one file.

Equations (paper section 3.3): with item embeddings ``x_1..x_t``, the last click ``x_t`` and the history mean
``m_s = mean_i x_i``:

* attention ``alpha_i = W_0 sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)`` (eq. 7; padded steps get ``alpha = 0``);
* ``m_a = sum_i alpha_i x_i`` (eq. 8);
* two MLP cells ``h_s = tanh(W_s m_a + b_s)`` and ``h_t = tanh(W_t x_t + b_t)`` (eq. 9, 10);
* the trilinear score ``z_i = <h_s, h_t, x_i> = x_i^T (h_s * h_t)`` (eq. 11) and a softmax over all items.

Paper defaults (section 4.3): embedding 100, weights from N(0, 0.05), embeddings from N(0, 0.002), lr 0.005
(Adam here, the shared optimiser), batch 512. RecBole adds ``m_s`` to ``m_a``; we keep the paper's eq. 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class STAMPConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 100
    lr: float = 0.005
    batch_size: int = 512


class STAMPNet(nn.Module):
    """The network: item rows ``[B, L]`` (pad row ``n_items``) -> logits over the catalog."""

    def __init__(self, c: STAMPConfig, n_items: int):
        super().__init__()
        n, d = n_items, c.embedding_dim
        self.pad = n
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.w1 = nn.Linear(d, d, bias=False)
        self.w2 = nn.Linear(d, d, bias=False)
        self.w3 = nn.Linear(d, d, bias=False)
        self.w0 = nn.Linear(d, 1, bias=False)
        self.b_a = nn.Parameter(torch.zeros(d))
        self.mlp_s = nn.Linear(d, d)
        self.mlp_t = nn.Linear(d, d)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.05)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.item_emb.weight, 0.0, 0.002)
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def encode(self, rows):
        """``h_s * h_t``, the vector the trilinear product scores items with, ``[B, d]``."""
        real = rows != self.pad
        x = self.item_emb(rows)                                     # [B, L, d]; pads are zero
        x_t = x[:, -1]                                              # left padding: last column = last click
        m_s = x.sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        pre = self.w1(x) + (self.w2(x_t) + self.w3(m_s) + self.b_a).unsqueeze(1)
        alpha = self.w0(torch.sigmoid(pre)).squeeze(-1).masked_fill(~real, 0.0)
        m_a = (alpha.unsqueeze(-1) * x).sum(1)
        return torch.tanh(self.mlp_s(m_a)) * torch.tanh(self.mlp_t(x_t))

    def forward(self, rows):
        return self.encode(rows) @ self.item_emb.weight[:self.pad].T


class STAMP(NeuralRecommender):
    name = "stamp"
    config_class = STAMPConfig

    def build_network(self):
        return STAMPNet(self.config, len(self.catalog))
