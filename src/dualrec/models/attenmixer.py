"""Atten-Mixer, Multi-Level Attention Mixture Network (Zhang, Guo, Li, Xie, Kim, Zhang, Xie, Wang & Kim, WSDM 2023).

The paper's point is that GNN propagation is redundant in GNN-based session models and the readout does the work,
so Atten-Mixer drops the GNN: L2-normalised item embeddings (NISER) go straight into a multi-level attention
readout. Followed here: the authors' own model, Peiyance/Atten-Mixer-torch ``src/models/CCSGNN.py`` with the
defaults of ``src/main_area_semantic.py`` (the PDF was not retrievable offline, so parts are named, not numbered):

* **multi-level intent queries** (concept view, with the *inherent priority* bias: only the last items form
  concepts): for level ``l = 1..L``, ``q_l = W_l [x_t; x_{t-1}; ...; x_{t-l+1}]`` from the last ``l`` normalised
  item embeddings (level 1 is the instance view); each query L2-normalised;
* **multi-head level-L attention**: per head ``h`` and level ``l``, ``alpha_{l,h,i} = softmax_i(2 sigmoid(
  (W_0 q_l)_h . (W_1 x_i)_h))`` over the session's items;
* **attention mixing** (*local invariance*): the ``L`` maps of a head are mixed by ``L_p`` pooling,
  ``(sum_l alpha_l^p)^(1/p)``, then re-normalised by ``softmax_i(2 .)``; with dropout on the maps,
  ``a = LayerNorm(sum_i alpha_i (W_2 x_i))`` (heads concatenated);
* **prediction**: ``s = W_3 [a; x_t]``; scores ``sigma * cos(s, e_j)`` (normalised session and item vectors, NISER's
  scale ``sigma = 16``; dropout on the normalised item table in training), a softmax cross-entropy over all items.

Defaults (the authors' code): d = 256, L = 7 levels (the paper's Figure 4 illustrates L = 3), 8 heads, p = 4,
dropout 0.1, sigma 16, Adam lr 1e-3 with L2 1e-5, batch 100, 10 epochs, every parameter ~ U(-1/sqrt(d), 1/sqrt(d)).
Departures: heads split the feature dimension as in standard multi-head attention (the code's ``view(-1, L, d/h)``
of a ``[B, L, d]`` tensor mixes positions across heads); queries are normalised each to unit length (the code
normalises across levels, ``dim=1``); no step decay of the learning rate (x0.1 every 3 epochs in the code; the
shared trainer has a constant rate). As in the code, padded positions are masked only after the pooling (the first
softmax runs over every position, which keeps the pooled maps above 0 where ``x^(1/p)`` has a finite gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class AttenMixerConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 256
    levels: int = 7              # L: intent levels, queries from the last 1..L items
    heads: int = 8
    lp_norm: int = 4             # p of the L_p pooling that mixes the L attention maps
    dropout: float = 0.1
    scale: float = 16.0          # sigma on the cosine scores (NISER)
    batch_size: int = 100
    weight_decay: float = 1e-5


class AttenMixerNet(nn.Module):
    """The network: item rows ``[B, L]`` (pad row ``n_items``) -> scaled cosine logits over the catalog."""

    def __init__(self, c: AttenMixerConfig, n_items: int):
        super().__init__()
        n, d, L, H = n_items, c.embedding_dim, c.levels, c.heads
        if d % H:
            raise ValueError(f"attenmixer: embedding_dim {d} must be a multiple of heads {H}")
        self.c, self.pad = c, n
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.level_q = nn.ModuleList(nn.Linear(l * d, d) for l in range(1, L + 1))   # W_l
        self.w0 = nn.Linear(d, d)
        self.w1 = nn.Linear(d, d)
        self.w2 = nn.Linear(d, d)
        self.ln = nn.LayerNorm(d, eps=1e-8)
        self.w3 = nn.Linear(2 * d, d)
        for p in self.parameters():
            nn.init.uniform_(p, -d ** -0.5, d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def encode(self, rows):
        """The normalised session vector ``s / |s|``, ``[B, d]``."""
        c = self.c
        d, L, H = c.embedding_dim, c.levels, c.heads
        B, T = rows.shape
        pad = rows == self.pad
        masked = pad & ~pad.all(1, keepdim=True)                 # an empty history keeps its pads
        x = F.normalize(self.item_emb(rows), dim=-1)           # pads stay 0
        x = F.normalize(F.dropout(x, c.dropout, self.training), dim=-1)
        last = x.flip(1)[:, :L]                                  # x_t, x_{t-1}, ... (pads past the start)
        if last.shape[1] < L:
            last = F.pad(last, (0, 0, 0, L - last.shape[1]))
        q = torch.stack([lin(last[:, :l].reshape(B, l * d)) for l, lin in enumerate(self.level_q, 1)], 1)
        q = F.normalize(q, dim=-1)                               # [B, L, d]
        q0 = self.w0(q).view(B, L, H, d // H).transpose(1, 2)    # [B, H, L, d/H]
        k1 = self.w1(x).view(B, T, H, d // H).transpose(1, 2)    # [B, H, T, d/H]
        alpha = torch.softmax(2 * torch.sigmoid(q0 @ k1.transpose(-1, -2)), -1)   # [B, H, L, T]
        mixed = alpha.pow(c.lp_norm).sum(2).pow(1.0 / c.lp_norm)  # L_p pooling over levels: [B, H, T]
        alpha = torch.softmax((2 * mixed).masked_fill(masked[:, None, :], -torch.inf), -1)
        alpha = F.dropout(alpha, c.dropout, self.training)
        v = self.w2(x).view(B, T, H, d // H).transpose(1, 2)     # [B, H, T, d/H]
        a = self.ln((alpha.unsqueeze(-1) * v).sum(2).reshape(B, d))
        return F.normalize(self.w3(torch.cat([a, x[:, -1]], 1)), dim=-1)

    def forward(self, rows):
        e = F.dropout(F.normalize(self.item_emb.weight[:self.pad], dim=-1), self.c.dropout, self.training)
        return self.c.scale * self.encode(rows) @ e.T


class AttenMixer(NeuralRecommender):
    name = "attenmixer"
    config_class = AttenMixerConfig

    def build_network(self):
        return AttenMixerNet(self.config, len(self.catalog))
