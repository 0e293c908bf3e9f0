"""SASRec, self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), in one file.

Architecture (paper section III): item embedding ``M_i`` (shared with the output layer) plus a learned position
embedding, dropout, then ``num_blocks`` blocks of causal self-attention and a point-wise two-layer feed-forward
network, each with a residual connection, layer norm and dropout (eq. 2-4; queries are layer-normed, keys and
values are not, as in the authors' code); the last position's output ``F_t`` scores item ``i`` as ``F_t . M_i``
(eq. 6, shared item embedding). Left padding is masked out of the keys and zeroed after every block.

Paper defaults for ML-1M: 2 blocks, 1 head, d = 50, dropout 0.2, Adam lr 0.001, batch 128; the paper's maximum
length for ML-1M is 200, we use 50 (the project's windows; most held-out histories' signal is in the last items).
Loss: as the paper, every position of a user's sequence predicts its next item (``targets="all"``: the sequence cut
into rows of ``max_len``, padding masked), with the shared full-softmax cross-entropy instead of the paper's
binary cross-entropy with one sampled negative per position (a full softmax over 1,000 items is cheap and is known
to train SASRec at least as well: Klenitskiy & Vasilev, RecSys 2023). ``targets="last"`` trains on the last
position of every prefix window instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dualrec.models.neural import NeuralConfig, NeuralRecommender, at


@dataclass
class SASRecConfig(NeuralConfig):
    max_len: int = 50
    min_len: int = 1
    targets: str = "all"
    hidden: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    batch_size: int = 128


class SASRecNet(nn.Module):
    def __init__(self, c: SASRecConfig, n_items: int):
        super().__init__()
        n, d, L = n_items, c.hidden, c.max_len
        self.n, self.d, self.L, self.num_heads = n, d, L, c.num_heads
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.pos_emb = nn.Embedding(L, d)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = attention_blocks(d, c.num_heads, c.num_blocks, c.dropout)
        self.ln_out = nn.LayerNorm(d, eps=1e-8)
        self.register_buffer("causal", torch.triu(torch.ones(L, L, dtype=torch.bool), 1))
        nn.init.xavier_normal_(self.item_emb.weight)   # the authors' TF code: Glorot init
        nn.init.xavier_normal_(self.pos_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def states(self, rows, last_only: bool = False):
        """The output ``F`` at every position, ``[B, T, d]`` (``last_only``: the last position's, ``[B, d]``)."""
        T = rows.shape[1]
        pad = rows == self.n
        x = self.item_emb(rows) * self.d ** 0.5 + self.pos_emb.weight[self.L - T:]
        x = self.drop(x) * (~pad).unsqueeze(-1).to(x.dtype)
        return self.ln_out(run_blocks(self.blocks, x, pad, self.causal, self.num_heads, last_only))

    def encode(self, rows):
        """The last position's output ``F_t``, ``[B, d]``."""
        return self.states(rows, last_only=True)

    def forward(self, rows):
        return self.encode(rows) @ self.item_emb.weight[:self.n].T

    def positions(self, rows, where=None):
        """Scores after every position, ``[B, T, n_items]``; with a mask ``where [B, T]`` only there, ``[M, n_items]``."""
        return at(self.states(rows), where) @ self.item_emb.weight[:self.n].T


class SASRec(NeuralRecommender):
    name = "sasrec"
    config_class = SASRecConfig
    target_modes = ("last", "all")

    def build_network(self):
        return SASRecNet(self.config, len(self.catalog))


class AttentionBlock(nn.Module):
    """One SASRec block (eq. 2-4): causal self-attention and a point-wise feed-forward network, each with a
    residual connection, layer norm and dropout; ``make_dropout(p)`` makes the feed-forward dropouts."""

    def __init__(self, d: int, num_heads: int, dropout: float, make_dropout=nn.Dropout):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d, eps=1e-8)
        self.attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.LayerNorm(d, eps=1e-8)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), make_dropout(dropout), nn.Linear(d, d),
                                 make_dropout(dropout))

    def forward(self, x, attn_mask, keep):
        # queries: every position, or only the last one (``attn_mask``/``keep`` then have one query row)
        q = self.ln_attn(x[:, -attn_mask.shape[1]:])
        x = q + self.attn(q, x, x, attn_mask=attn_mask, need_weights=False)[0]
        x = self.ln_ffn(x)
        return (x + self.ffn(x)) * keep


def attention_blocks(d: int, num_heads: int, num_blocks: int, dropout: float, dropout_layer=nn.Dropout):
    """``num_blocks`` :class:`AttentionBlock` as an ``nn.ModuleList``, run by :func:`run_blocks`. Shared with
    UniSRec, whose sequence encoder is SASRec's (with :class:`RandDropout`, faster on CPU)."""
    return nn.ModuleList(AttentionBlock(d, num_heads, dropout, dropout_layer) for _ in range(num_blocks))


def run_blocks(blocks, x, pad, causal, num_heads: int, last_only: bool = True):
    """The output after all ``blocks`` for left-padded inputs ``x [B, T, d]`` (``pad [B, T]`` marks padding,
    ``causal`` is the ``[L, L]`` upper-triangular mask with ``T <= L``): the last position's, ``[B, d]``, or with
    ``last_only=False`` every position's, ``[B, T, d]``.

    Future and padded keys are masked (a position may always see itself: no all-masked rows) and padded positions
    are zeroed after every block. ``last_only`` computes the last block's queries, attention output and
    feed-forward network only for the last position, the one that is read (the same result, less work).
    """
    T, L = x.shape[1], causal.shape[0]
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    mask = causal[L - T:, L - T:].unsqueeze(0) | pad.unsqueeze(1)
    mask = mask & ~torch.eye(T, dtype=torch.bool, device=x.device)
    mask = mask.repeat_interleave(num_heads, dim=0)
    for i, block in enumerate(blocks):
        if last_only and i == len(blocks) - 1:
            x = block(x, mask[:, -1:], keep[:, -1:])
        else:
            x = block(x, mask, keep)
    return x[:, -1] if last_only else x


class RandDropout(nn.Dropout):
    """``nn.Dropout(p)`` drawing its mask with ``torch.rand`` (3-4x faster than the ``bernoulli_`` of
    ``nn.Dropout`` on CPU; the same distribution, other random draws)."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))
