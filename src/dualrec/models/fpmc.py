"""FPMC, Factorizing Personalized Markov Chains (Rendle, Freudenthaler & Schmidt-Thieme, WWW 2010), in one file.

The paper's score of item ``i`` for user ``u`` after basket ``B`` (eq. 6, the pair-wise factorisation) is

    x(u, B, i) = <v^{U,I}_u, v^{I,U}_i> + 1/|B| sum_{l in B} <v^{I,L}_i, v^{L,I}_l>

a matrix-factorisation term plus a factorised first-order Markov chain. In next-item recommendation the basket is
the last item ``l``. Two documented adaptations:

* **user factor folded in from the history**: test users of the ``paper`` protocol are unseen at training time,
  and the Recommender interface receives histories, not user ids; so ``v^{U,I}_u`` is the mean of a learned
  per-item embedding over the user's last ``max_len`` items (the FISM-style fold-in used by FOSSIL, He & McAuley
  2016, which the FPMC authors' later work also compares against). With ``max_len`` items this stays personalised.
* **loss**: the shared full-softmax cross-entropy instead of S-BPR with sampled negatives (same ranking objective,
  every negative used; the catalog is 1,000 items). Factor size 64 (the paper sweeps 8..128). Trained on the
  last position of every prefix window (``targets="last"``); the score after each position depends only on the
  items up to it, so ``targets="all"`` is offered too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender, at


@dataclass
class FPMCConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    factors: int = 64
    batch_size: int = 512
    lr: float = 0.005         # Adam; the paper's SGD rate 0.01-0.05 is for per-sample S-BPR updates


class FPMCNet(nn.Module):
    def __init__(self, n_items: int, k: int):
        super().__init__()
        n = n_items
        self.n, self.k = n, k
        self.user_from_items = nn.Embedding(n + 1, k, padding_idx=n)   # folds in v^{U,I}_u
        self.item_for_user = nn.Embedding(n, k)                       # v^{I,U}_i
        self.item_for_last = nn.Embedding(n, k)                       # v^{I,L}_i
        self.last_for_item = nn.Embedding(n + 1, k, padding_idx=n)    # v^{L,I}_l
        for emb in self.modules():
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, 0.0, 0.01)   # the paper initialises from N(0, 0.01)
        self.user_from_items.weight.data[n].zero_()
        self.last_for_item.weight.data[n].zero_()

    def states(self, rows):
        """``[v^{U,I}_u ; v^{L,I}_l]`` after every position, ``[B, L, 2k]``: the user factor folded in from the
        items so far and the factor of the item at that position."""
        real = (rows != self.n).cumsum(1).clamp(min=1).unsqueeze(-1)
        user = self.user_from_items(rows).cumsum(1) / real
        return torch.cat([user, self.last_for_item(rows)], dim=-1)

    def encode(self, rows):
        """``[v^{U,I}_u ; v^{L,I}_l]``, ``[B, 2k]``: the user factor and the last item's factor."""
        return self.states(rows)[:, -1]

    def scores(self, h):
        user, last = h.split(self.k, dim=-1)
        return user @ self.item_for_user.weight.T + last @ self.item_for_last.weight.T

    def forward(self, rows):
        return self.scores(self.encode(rows))

    def positions(self, rows, where=None):
        """Scores after every position, ``[B, L, n_items]``; with a mask ``where [B, L]`` only there, ``[M, n_items]``."""
        return self.scores(at(self.states(rows), where))


class FPMC(NeuralRecommender):
    name = "fpmc"
    config_class = FPMCConfig
    target_modes = ("last", "all")

    def build_network(self):
        return FPMCNet(len(self.catalog), self.config.factors)
