"""DUALRec Stage 1: the multimodal two-layer LSTM (Li & Grasman 2025, section 4.2.1), in one file.

Per time step a movie is three things, concatenated to 256 numbers:
  * its id, embedded in 128 dims;
  * its title, as up to 10 word tokens (vocabulary capped at 5,000, Keras-style lower-cased words) embedded in 64
    dims and mean-pooled (padding masked out: Keras' GlobalAveragePooling would also average the pads);
  * its genres, a multi-hot over the 18 ML-1M genres through Dense(64) + ReLU.
Then LSTM(256, all steps) -> dropout 0.3 -> LSTM(128, last step) -> dropout 0.3 -> [Dense(256)+ReLU+dropout, as in
the authors' code; ``head_hidden=0`` removes it] -> Dense(n_items) (softmax in the loss). Trained on sliding windows
of 30 movies with the 31st as target, Adam (1e-3, Keras' default), batch 128, 10 epochs: ``targets="last"``, the
paper's recipe and the default. The LSTM is causal, so ``targets="all"`` (the head after every position, each
predicting the next movie) is offered too.

Title tokens and genres are fixed per item, so they are lookup tables (buffers) indexed by the item row: the model
takes only item rows ``[B, 30]``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender, at

_WORD_RE = re.compile(r"[!\"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\t\n]")


def title_tokens(titles: list[str], vocab_size: int = 5000, max_tokens: int = 10) -> tuple[np.ndarray, dict]:
    """Keras ``Tokenizer(num_words=vocab_size)`` semantics: lower-case, strip punctuation, split on spaces; words
    ranked by frequency (ties: first seen), ids 1..vocab_size-1; the first ``max_tokens`` kept, 0-padded after."""
    words = [_WORD_RE.sub(" ", t.lower()).split() for t in titles]
    counts = Counter(w for ws in words for w in ws)
    first_seen = {}
    for ws in words:
        for w in ws:
            first_seen.setdefault(w, len(first_seen))
    ranked = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))
    index = {w: i + 1 for i, w in enumerate(ranked[: vocab_size - 1])}
    out = np.zeros((len(titles), max_tokens), dtype=np.int64)
    for r, ws in enumerate(words):
        ids = [index[w] for w in ws if w in index][:max_tokens]
        out[r, : len(ids)] = ids
    return out, index


@dataclass
class LSTMConfig(NeuralConfig):
    id_dim: int = 128
    title_dim: int = 64
    genre_dim: int = 64
    title_vocab: int = 5000
    title_tokens: int = 10
    hidden1: int = 256
    hidden2: int = 128
    dropout: float = 0.3
    head_hidden: int = 256     # the authors' code's Dense(256, relu) before the softmax; 0 = the paper's text


class MultimodalLSTMNet(nn.Module):
    """The network: item rows ``[B, L]`` -> logits; ``tokens [n + 1, T]`` and ``genres [n + 1, G]`` are the per-item
    lookup tables (row ``n``, the pad, has none)."""

    def __init__(self, c: LSTMConfig, n_items: int, tokens: np.ndarray, genres: np.ndarray):
        super().__init__()
        n = n_items
        self.register_buffer("tokens", torch.as_tensor(tokens))
        self.register_buffer("genres", torch.as_tensor(genres))
        self.item_emb = nn.Embedding(n + 1, c.id_dim, padding_idx=n)
        self.word_emb = nn.Embedding(c.title_vocab, c.title_dim, padding_idx=0)
        self.genre_fc = nn.Linear(genres.shape[1], c.genre_dim)
        self.lstm1 = nn.LSTM(c.id_dim + c.title_dim + c.genre_dim, c.hidden1, batch_first=True)
        self.lstm2 = nn.LSTM(c.hidden1, c.hidden2, batch_first=True)
        self.drop = nn.Dropout(c.dropout)
        head = [nn.Linear(c.hidden2, c.head_hidden), nn.ReLU(), nn.Dropout(c.dropout)] if c.head_hidden else []
        self.head = nn.Sequential(*head, nn.Linear(c.head_hidden or c.hidden2, n))

    def features(self, rows):
        tok = self.tokens[rows]                                   # [B, L, T]
        mask = (tok > 0).float().unsqueeze(-1)
        title = (self.word_emb(tok) * mask).sum(2) / mask.sum(2).clamp(min=1.0)
        genre = torch.relu(self.genre_fc(self.genres[rows]))
        return torch.cat([self.item_emb(rows), title, genre], dim=-1)  # [B, L, 256]

    def states(self, rows):
        """The second LSTM's hidden state after every position, ``[B, L, hidden2]``."""
        h, _ = self.lstm1(self.features(rows))
        out, _ = self.lstm2(self.drop(h))
        return out

    def encode(self, rows):
        """The user state: the second LSTM's last hidden state ``[B, hidden2]``."""
        return self.states(rows)[:, -1]

    def forward(self, rows):
        return self.head(self.drop(self.encode(rows)))

    def positions(self, rows, where=None):
        """Logits after every position, ``[B, L, n_items]``; with a mask ``where [B, L]`` only there, ``[M, n_items]``."""
        return self.head(self.drop(at(self.states(rows), where)))


class MultimodalLSTM(NeuralRecommender):
    name = "lstm"
    config_class = LSTMConfig
    target_modes = ("last", "all")

    def build_network(self):
        c: LSTMConfig = self.config
        tokens, _ = title_tokens(self.catalog.items["raw_title"].tolist(), c.title_vocab, c.title_tokens)
        genres = self.catalog.genre_matrix()
        tokens = np.vstack([tokens, np.zeros((1, tokens.shape[1]), np.int64)])  # pad row: no tokens
        genres = np.vstack([genres, np.zeros((1, genres.shape[1]), np.float32)])  # pad row: no genres
        return MultimodalLSTMNet(c, len(self.catalog), tokens, genres)
