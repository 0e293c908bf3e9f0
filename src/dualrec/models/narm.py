"""NARM, Neural Attentive Recommendation Machine (Li, Ren, Chen, Ren, Lian & Ma, CIKM 2017), in one file.

Equations (paper section 3): items are embedded and run through a GRU, giving hidden states ``h_1..h_t``.

* global encoder: ``c_g = h_t`` (eq. 5);
* local encoder: ``alpha_tj = v^T sigmoid(A_1 h_t + A_2 h_j)`` (eq. 7, not normalised, as in the paper and the
  authors' Theano code) and ``c_l = sum_j alpha_tj h_j`` (eq. 6); padded steps get ``alpha = 0``;
* ``c_t = [c_g; c_l]`` and the bi-linear decoder ``S_i = emb_i^T B c_t`` (eq. 9), a softmax over all items.

Defaults from the paper's section 4.3: embedding 50, hidden 100, dropout 0.25 between embedding and GRU and 0.5
between the encoder and the decoder, Adam with lr 0.001, batch 512. Trained with the shared cross-entropy trainer
(the paper's loss) on windows of the last 30 items (``min_len=1``: every prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class NARMConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 50
    hidden: int = 100
    emb_dropout: float = 0.25
    ct_dropout: float = 0.5
    batch_size: int = 512


class NARMNet(nn.Module):
    """The network: item rows ``[B, L]`` (pad row ``n_items``) -> logits over the catalog."""

    def __init__(self, c: NARMConfig, n_items: int):
        super().__init__()
        n = self.pad = n_items
        self.item_emb = nn.Embedding(n + 1, c.embedding_dim, padding_idx=n)
        self.emb_drop = nn.Dropout(c.emb_dropout)
        self.gru = nn.GRU(c.embedding_dim, c.hidden, batch_first=True)
        self.a1 = nn.Linear(c.hidden, c.hidden, bias=False)
        self.a2 = nn.Linear(c.hidden, c.hidden, bias=False)
        self.v = nn.Linear(c.hidden, 1, bias=False)
        self.ct_drop = nn.Dropout(c.ct_dropout)
        self.b = nn.Linear(2 * c.hidden, c.embedding_dim, bias=False)   # B in eq. 9
        for p in (self.item_emb.weight, self.a1.weight, self.a2.weight, self.v.weight, self.b.weight):
            nn.init.xavier_normal_(p)   # as RecBole; N(0, 1) embeddings make the bilinear logits huge
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def encode(self, rows):
        """``c_t = [c_g; c_l]``, ``[B, 2 * hidden]``."""
        hs, h = self.gru(self.emb_drop(self.item_emb(rows)))       # hs [B, L, H]
        c_g = h[-1]
        alpha = self.v(torch.sigmoid(self.a1(c_g).unsqueeze(1) + self.a2(hs))).squeeze(-1)
        alpha = alpha.masked_fill(rows == self.pad, 0.0)
        c_l = (alpha.unsqueeze(-1) * hs).sum(1)
        return torch.cat([c_g, c_l], dim=1)

    def forward(self, rows):
        return self.b(self.ct_drop(self.encode(rows))) @ self.item_emb.weight[:self.pad].T


class NARM(NeuralRecommender):
    name = "narm"
    config_class = NARMConfig

    def build_network(self):
        return NARMNet(self.config, len(self.catalog))
