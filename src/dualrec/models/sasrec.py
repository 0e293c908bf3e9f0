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

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln_attn = nn.LayerNorm(d, eps=1e-8)
                self.attn = nn.MultiheadAttention(d, c.num_heads, dropout=c.dropout, batch_first=True)
                self.ln_ffn = nn.LayerNorm(d, eps=1e-8)
                self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(d, d),
                                         nn.Dropout(c.dropout))

            def forward(self, x, attn_mask, keep):
                q = self.ln_attn(x)
                x = q + self.attn(q, x, x, attn_mask=attn_mask, need_weights=False)[0]
                x = self.ln_ffn(x)
                return (x + self.ffn(x)) * keep

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
                self.pos_emb = nn.Embedding(L, d)
                self.drop = nn.Dropout(c.dropout)
                self.blocks = nn.ModuleList(Block() for _ in range(c.num_blocks))
                self.ln_out = nn.LayerNorm(d, eps=1e-8)
                self.register_buffer("causal", torch.triu(torch.ones(L, L, dtype=torch.bool), 1))
                nn.init.xavier_normal_(self.item_emb.weight)   # the authors' TF code: Glorot init
                nn.init.xavier_normal_(self.pos_emb.weight)
                with torch.no_grad():
                    self.item_emb.weight[n].zero_()

            def encode(self, rows):
                """The last position's output ``F_t``, ``[B, d]``."""
                B, T = rows.shape
                pad = rows == n
                keep = (~pad).unsqueeze(-1).float()
                x = self.item_emb(rows) * d ** 0.5 + self.pos_emb.weight[L - T:]
                x = self.drop(x) * keep
                # mask future keys and padded keys; a position may always see itself (no all-masked rows)
                mask = self.causal[L - T:, L - T:].unsqueeze(0) | pad.unsqueeze(1)
                mask = mask & ~torch.eye(T, dtype=torch.bool, device=rows.device)
                mask = mask.repeat_interleave(c.num_heads, dim=0)
                for block in self.blocks:
                    x = block(x, mask, keep)
                return self.ln_out(x[:, -1])

            def forward(self, rows):
                return self.encode(rows) @ self.item_emb.weight[:n].T

        return Net()
