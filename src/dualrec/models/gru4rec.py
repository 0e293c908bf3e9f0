"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas & Tikk, ICLR 2016), the recurrent reference, in one file.

The paper's model is an item embedding fed to a GRU whose hidden state after the last item scores every item
through a feed-forward output layer. We follow its ML defaults where they apply (one GRU layer of 100 units,
dropout on the hidden state, Adam) and depart in two documented ways:

* **loss**: full softmax cross-entropy over the catalog, which the authors' own later GRU4Rec release (Hidasi &
  Karatzoglou, CIKM 2018, "Recurrent neural networks with top-k gains") found to match or beat TOP1/BPR when the
  catalog is small enough to score in full (1,000 items here), and which every neural baseline here shares;
* **batching**: rows of ``max_len`` items instead of session-parallel mini-batches. With ``targets="all"`` (the
  paper's objective: every position predicts its next item) each user's sequence is cut into rows of 30 and
  back-propagation is truncated at the row's start; with ``targets="last"`` every prefix is its own window of the
  last 30 items (``min_len=1``), one target each.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender, at


@dataclass
class GRU4RecConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 64
    hidden: int = 100           # paper: 100 GRU units for the ML-sized data sets
    layers: int = 1
    dropout: float = 0.25       # on the embedded input and on the final hidden state
    targets: str = "all"
    batch_size: int = 256


class GRU4RecNet(nn.Module):
    def __init__(self, c: GRU4RecConfig, n_items: int):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, c.embedding_dim, padding_idx=n_items)
        self.drop = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.embedding_dim, c.hidden, num_layers=c.layers, batch_first=True)
        self.out = nn.Linear(c.hidden, n_items)

    def states(self, rows):
        """The top GRU layer's state after every position, ``[B, L, hidden]``; leading pads have zero embeddings."""
        return self.gru(self.drop(self.item_emb(rows)))[0]

    def encode(self, rows):
        """The GRU state after the last item, ``[B, hidden]``."""
        return self.states(rows)[:, -1]

    def forward(self, rows):
        return self.out(self.drop(self.encode(rows)))

    def positions(self, rows, where=None):
        """Logits after every position, ``[B, L, n_items]``; with a mask ``where [B, L]`` only there, ``[M, n_items]``."""
        return self.out(self.drop(at(self.states(rows), where)))


class GRU4Rec(NeuralRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig
    target_modes = ("last", "all")

    def build_network(self):
        return GRU4RecNet(self.config, len(self.catalog))
