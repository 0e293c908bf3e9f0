"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas & Tikk, ICLR 2016), the recurrent reference, in one file.

The paper's model is an item embedding fed to a GRU whose hidden state after the last item scores every item
through a feed-forward output layer. We follow its ML defaults where they apply (one GRU layer of 100 units,
dropout on the hidden state, Adam) and depart in two documented ways:

* **loss**: full softmax cross-entropy over the catalog, which the authors' own later GRU4Rec release (Hidasi &
  Karatzoglou, CIKM 2018, "Recurrent neural networks with top-k gains") found to match or beat TOP1/BPR when the
  catalog is small enough to score in full (1,000 items here), and which every neural baseline here shares;
* **batching**: the shared trainer's windows of the last ``max_len`` items (every prefix a window, ``min_len=1``)
  instead of session-parallel mini-batches; both train the GRU to predict each next item from the items before it,
  the windows just truncate back-propagation at 30 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class GRU4RecConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    embedding_dim: int = 64
    hidden: int = 100           # paper: 100 GRU units for the ML-sized data sets
    layers: int = 1
    dropout: float = 0.25       # on the embedded input and on the final hidden state
    batch_size: int = 256


class GRU4Rec(NeuralRecommender):
    name = "gru4rec"
    config_class = GRU4RecConfig

    def build_network(self):
        from torch import nn

        c: GRU4RecConfig = self.config
        n = len(self.catalog)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.item_emb = nn.Embedding(n + 1, c.embedding_dim, padding_idx=n)
                self.drop = nn.Dropout(c.dropout)
                self.gru = nn.GRU(c.embedding_dim, c.hidden, num_layers=c.layers, batch_first=True)
                self.out = nn.Linear(c.hidden, n)

            def encode(self, rows):
                """The GRU state after the last item, ``[B, hidden]``; leading pads have zero embeddings."""
                _, h = self.gru(self.drop(self.item_emb(rows)))
                return h[-1]

            def forward(self, rows):
                return self.out(self.drop(self.encode(rows)))

        return Net()
