"""SASRec, self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), in one file.

Architecture (paper section III): item embedding ``M_i`` (shared with the output layer) plus a learned position
embedding, dropout, then ``num_blocks`` blocks of causal self-attention and a point-wise two-layer feed-forward
network, each with a residual connection, layer norm and dropout (eq. 2-4; queries are layer-normed, keys and
values are not, as in the authors' code); the last position's output ``F_t`` scores item ``i`` as ``F_t . M_i``
(eq. 6, shared item embedding). Left padding is masked out of the keys and zeroed after every block.

Paper defaults for ML-1M: 2 blocks, 1 head, d = 50, dropout 0.2, Adam lr 0.001, batch 128; the paper's maximum
length for ML-1M is 200, we use 50 (the project's windows; most held-out histories' signal is in the last items).
Loss: the shared full-softmax cross-entropy on the last position of every prefix window, instead of the paper's
binary cross-entropy with one sampled negative per position (a full softmax over 1,000 items is cheap and is known
to train SASRec at least as well: Klenitskiy & Vasilev, RecSys 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class SASRecConfig(NeuralConfig):
    max_len: int = 50
    min_len: int = 1
    hidden: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    batch_size: int = 128


class SASRec(NeuralRecommender):
    name = "sasrec"
    config_class = SASRecConfig

    def build_network(self):
        import torch
        from torch import nn

        c: SASRecConfig = self.config
        n, d, L = len(self.catalog), c.hidden, c.max_len

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
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

            def encode(self, rows):
                """The last position's output ``F_t``, ``[B, d]``."""
                T = rows.shape[1]
                pad = rows == n
                keep = (~pad).unsqueeze(-1).float()
                x = self.item_emb(rows) * d ** 0.5 + self.pos_emb.weight[L - T:]
                x = self.drop(x) * keep
                # every position through the last block too: the dropout draws (so a seeded fit) stay as they
                # were before run_blocks was shared; last_only=True gives the same function, faster
                return self.ln_out(run_blocks(self.blocks, x, pad, self.causal, c.num_heads, last_only=False))

            def forward(self, rows):
                return self.encode(rows) @ self.item_emb.weight[:n].T

        return Net()


def attention_blocks(d: int, num_heads: int, num_blocks: int, dropout: float, dropout_layer=None):
    """``num_blocks`` SASRec blocks (eq. 2-4) as an ``nn.ModuleList``, run by :func:`run_blocks`. Shared with
    UniSRec, whose sequence encoder is SASRec's. ``dropout_layer(p)`` makes the feed-forward dropouts
    (default ``nn.Dropout``; :func:`rand_dropout` is faster on CPU)."""
    from torch import nn

    make_dropout = dropout_layer or nn.Dropout

    class Block(nn.Module):
        def __init__(self):
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

    return nn.ModuleList(Block() for _ in range(num_blocks))


def run_blocks(blocks, x, pad, causal, num_heads: int, last_only: bool = True):
    """The output of the last position after all ``blocks``, ``[B, d]``, for left-padded inputs ``x [B, T, d]``
    (``pad [B, T]`` marks padding, ``causal`` is the ``[L, L]`` upper-triangular mask with ``T <= L``).

    Future and padded keys are masked (a position may always see itself: no all-masked rows) and padded positions
    are zeroed after every block. ``last_only`` computes the last block's queries, attention output and
    feed-forward network only for the last position, the one that is read (the same result, less work: the other
    positions of the last block feed nothing); ``False`` runs the last block over every position as well.
    """
    import torch

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
    return x[:, -1]


def rand_dropout(p: float):
    """``nn.Dropout(p)`` drawing its mask with ``torch.rand`` (3-4x faster than the ``bernoulli_`` of
    ``nn.Dropout`` on CPU; the same distribution, other random draws)."""
    import torch
    from torch import nn

    class RandDropout(nn.Dropout):
        def forward(self, x):
            if not self.training or self.p == 0:
                return x
            keep = torch.rand(x.shape, device=x.device) >= self.p
            return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))

    return RandDropout(p)
