"""GCE-GNN, Global Context Enhanced Graph Neural Networks (Wang, Wei, Cong, Li, Mao & Qiu, SIGIR 2020), in one file.

Equations (numbered as in arXiv 2106.05081), followed with the authors' code (CCIIPLab/GCE-GNN: ``model.py``,
``aggregator.py``, ``build_graph.py``) as the cross-check:

* global graph (section 3.1, ``build_graph.py``): an undirected edge between every pair of items at most
  ``epsilon = 3`` steps apart in a training sequence, weighted by how often the pair occurs; each item keeps its
  ``n_neighbors = 12`` heaviest neighbours. Built once at fit time from the training sequences (numpy, vectorised,
  :func:`global_graph`) and held in the network as buffers ``[n_items + 1, 12]`` (ids and weights), so it travels
  in the state dict / safetensors and ``Recommender.load`` restores it;
* global level (section 4.1): with the session mean ``s = mean_i h_vi`` (eq. 4), the session-aware attention
  ``pi(v_i, v_j) = q_1^T LeakyReLU(W_1 [s * h_vj ; w_ij])`` (eq. 2), softmax over the neighbours (eq. 3),
  ``h_N = sum_j pi h_vj`` (eq. 1) and ``h_v^g = relu(W_2 [h_v ; h_N])`` (eq. 5, dropout ``dropout_gcn`` on the
  concatenation as the authors' code); ``hops`` layers applied recursively (eq. 6);
* session level (section 4.2): the session graph of the window's unique items with four relations (self, out, in,
  in-out); ``e_ij = LeakyReLU(a_rij^T (h_vi * h_vj))`` (eq. 7), softmax over ``v_i``'s neighbours (eq. 8),
  ``h_vi^s = sum_j alpha_ij h_vj`` (eq. 9);
* session representation (section 4.3): ``h'_v = dropout(h^g) + dropout(h^s)`` (eq. 10; rates ``dropout_global``
  and ``dropout_local``), reversed position embeddings ``z_i = tanh(W_3 [h'_i ; p_{l-i+1}] + b_3)`` (eq. 11),
  ``s' = mean_i h'_i`` (eq. 12), ``beta_i = q_2^T sigmoid(W_4 z_i + W_5 s' + b_4)`` (eq. 13),
  ``S = sum_i beta_i h'_i`` (eq. 14);
* prediction: ``y_i = softmax(S^T v_i)`` (eq. 15) with the cross-entropy loss (eq. 16), the shared trainer's.

Defaults from the paper's section 5.1.3 and the authors' ``main.py``: d = 100, batch 100, Adam lr 0.001, L2 1e-5,
12 neighbours, epsilon 3, 1 hop, global dropout 0.5, local and GCN dropout 0, LeakyReLU slope 0.2, every weight
from U(-1/sqrt(d), 1/sqrt(d)). Windows of the last 30 items, every prefix (``min_len=1``).

Departures: no learning-rate decay (the authors' StepLR x0.1 every 3 epochs; the shared trainer has none);
neighbours are the top 12 by weight with missing ones padded and masked out of eq. 3, where the authors' code
resamples the top 12 with replacement for items with fewer (duplicating some); ties in weight are broken by item
row; padding uses a zero embedding row instead of the authors' trained row 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dualrec.data.dataset import Sequences
from dualrec.models.neural import NeuralConfig, NeuralRecommender


@dataclass
class GCEGNNConfig(NeuralConfig):
    max_len: int = 30
    min_len: int = 1
    hidden: int = 100
    n_neighbors: int = 12      # neighbours kept per item in the global graph
    epsilon: int = 3           # global-graph edges join items at most epsilon steps apart
    hops: int = 1
    dropout_gcn: float = 0.0
    dropout_local: float = 0.0
    dropout_global: float = 0.5
    leaky_slope: float = 0.2
    lr: float = 0.001
    weight_decay: float = 1e-5
    batch_size: int = 100


def global_graph(seqs: list[np.ndarray], n_items: int, epsilon: int, n_neighbors: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_neighbors`` heaviest neighbours of every item (ids ``[n_items + 1, S]``, pad ``n_items``) and their
    weights (co-occurrence counts within ``epsilon`` steps, both directions; 0 for padding). Row ``n_items`` is the
    pad's: no neighbours."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs] + [np.zeros(0, np.int64)])
    owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    src, dst = [], []
    for k in range(1, epsilon + 1):
        same = owner[:-k] == owner[k:]
        a, b = flat[:-k][same], flat[k:][same]
        src += [a, b]
        dst += [b, a]
    keys, counts = np.unique(np.concatenate(src) * n_items + np.concatenate(dst), return_counts=True)
    i, j = keys // n_items, keys % n_items
    order = np.lexsort((j, -counts, i))            # by item, heaviest first, ties by neighbour row
    i, j, counts = i[order], j[order], counts[order]
    rank = np.arange(len(i)) - np.searchsorted(i, i)
    keep = rank < n_neighbors
    adj = np.full((n_items + 1, n_neighbors), n_items, dtype=np.int64)
    weight = np.zeros((n_items + 1, n_neighbors), dtype=np.float32)
    adj[i[keep], rank[keep]] = j[keep]
    weight[i[keep], rank[keep]] = counts[keep]
    return adj, weight


def session_nodes(rows, pad: int):
    """The session graph's nodes without a per-row loop: ``nodes [B, N]`` (each row's unique items, then ``pad``)
    and ``alias [B, L]`` (the node of every position). ``N`` is the batch's largest number of distinct values."""
    srt, order = rows.sort(dim=1)
    new = torch.ones_like(srt, dtype=torch.bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    node_of_sorted = new.long().cumsum(1) - 1
    alias = torch.empty_like(rows).scatter_(1, order, node_of_sorted)
    nodes = torch.full_like(rows, pad).scatter_(1, node_of_sorted, srt)
    return nodes[:, :int(node_of_sorted[:, -1].max()) + 1], alias


def transitions(rows, alias, n_nodes: int, pad: int):
    """``out [B, N, N]``: ``out[b, u, v]`` when node ``v`` is clicked right after node ``u`` somewhere in row ``b``."""
    B = rows.shape[0]
    real = (rows[:, :-1] != pad) & (rows[:, 1:] != pad)
    b = torch.arange(B, device=rows.device).unsqueeze(1).expand_as(real)
    out = torch.zeros(B, n_nodes, n_nodes, dtype=torch.bool, device=rows.device)
    out[b[real], alias[:, :-1][real], alias[:, 1:][real]] = True
    return out


class GlobalAggregator(nn.Module):
    """One hop of eq. 1-5 (the authors' ``GlobalAggregator``)."""

    def __init__(self, c: GCEGNNConfig):
        super().__init__()
        d = c.hidden
        self.slope = c.leaky_slope
        self.w_1 = nn.Linear(d + 1, d, bias=False)
        self.q_1 = nn.Linear(d, 1, bias=False)
        self.w_2 = nn.Linear(2 * d, d, bias=False)
        self.drop = nn.Dropout(c.dropout_gcn)

    def forward(self, h_self, h_nb, w_nb, s):
        """``h_self [B, M, d]``, neighbours ``h_nb [B, M, S, d]`` with weights ``w_nb [B, M, S]``."""
        feat = torch.cat([s[:, None, None] * h_nb, w_nb.unsqueeze(-1)], -1)
        pi = self.q_1(F.leaky_relu(self.w_1(feat), self.slope)).squeeze(-1)
        pi = pi.masked_fill(w_nb == 0, -9e15).softmax(-1)
        h_n = (pi.unsqueeze(-1) * h_nb).sum(-2)
        return torch.relu(self.w_2(self.drop(torch.cat([h_self, h_n], -1))))


class GCEGNNNet(nn.Module):
    """The network: item rows ``[B, L]`` (pad row ``n_items``) -> logits; ``adj``/``adj_weight`` ``[n + 1, S]`` are
    the global graph's neighbours of every item and their weights."""

    def __init__(self, c: GCEGNNConfig, n_items: int, adj: np.ndarray, weight: np.ndarray):
        super().__init__()
        n, d, L = n_items, c.hidden, c.max_len
        self.c, self.pad = c, n
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=n)
        self.pos_emb = nn.Embedding(L, d)
        self.a = nn.Parameter(torch.empty(4, d))       # a_r of eq. 7: self, out, in, in-out
        self.global_agg = nn.ModuleList(GlobalAggregator(c) for _ in range(c.hops))
        self.w_3 = nn.Linear(2 * d, d)
        self.w_4 = nn.Linear(d, d)
        self.w_5 = nn.Linear(d, d, bias=False)
        self.q_2 = nn.Linear(d, 1, bias=False)
        self.register_buffer("adj", torch.as_tensor(adj))
        self.register_buffer("adj_weight", torch.as_tensor(weight))
        stdv = 1.0 / math.sqrt(d)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)
        with torch.no_grad():
            self.item_emb.weight[n].zero_()

    def local(self, h, nodes, out):
        """Eq. 7-9 on the session graph; ``h [B, N, d]`` node embeddings."""
        N = h.shape[1]
        real = nodes != self.pad
        eye = torch.eye(N, dtype=torch.bool, device=h.device)
        inn = out.transpose(1, 2)
        rel = torch.where(eye, 0, out.long() + 2 * inn.long())          # 0 self, 1 out, 2 in, 3 in-out
        edge = (eye & real.unsqueeze(1)) | out | inn
        e = (h.unsqueeze(1) * self.a[:, None]) @ h.transpose(1, 2).unsqueeze(1)   # [B, 4, N, N]
        e = F.leaky_relu(e.gather(1, rel.unsqueeze(1)).squeeze(1), self.c.leaky_slope)
        return e.masked_fill(~edge, -9e15).softmax(-1) @ h

    def glob(self, h, nodes, s):
        """Eq. 1-6: ``hops`` rounds of session-aware aggregation over the global graph."""
        B = nodes.shape[0]
        S, d = self.c.n_neighbors, self.c.hidden
        ids, weights = [nodes], []
        for _ in range(self.c.hops):
            weights.append(self.adj_weight[ids[-1]])
            ids.append(self.adj[ids[-1]].view(B, -1))
        vectors = [h] + [self.item_emb(x) for x in ids[1:]]
        for agg in self.global_agg:
            vectors = [agg(vectors[k], vectors[k + 1].view(B, -1, S, d), weights[k], s)
                       for k in range(len(vectors) - 1)]
        return vectors[0]

    def encode(self, rows):
        """The session representation ``S`` of eq. 14, ``[B, d]``."""
        c, n, d = self.c, self.pad, self.c.hidden
        real = (rows != n).unsqueeze(-1).float()
        count = real.sum(1).clamp(min=1)
        nodes, alias = session_nodes(rows, n)
        h = self.item_emb(nodes)
        s = (self.item_emb(rows) * real).sum(1) / count                 # eq. 4
        h_local = self.local(h, nodes, transitions(rows, alias, nodes.shape[1], n))
        h_global = self.glob(h, nodes, s)
        h_node = F.dropout(h_local, c.dropout_local, self.training) + \
            F.dropout(h_global, c.dropout_global, self.training)        # eq. 10
        hp = h_node.gather(1, alias.unsqueeze(-1).expand(-1, -1, d)) * real
        T = rows.shape[1]
        pos = self.pos_emb.weight[:T].flip(0).expand(rows.shape[0], T, d)   # the last click is p_1
        z = torch.tanh(self.w_3(torch.cat([hp, pos], -1)))              # eq. 11
        s_p = hp.sum(1) / count                                         # eq. 12
        beta = self.q_2(torch.sigmoid(self.w_4(z) + self.w_5(s_p).unsqueeze(1))) * real   # eq. 13
        return (beta * hp).sum(1)                                       # eq. 14

    def forward(self, rows):
        return self.encode(rows) @ self.item_emb.weight[:self.pad].T    # eq. 15


class GCEGNN(NeuralRecommender):
    name = "gcegnn"
    config_class = GCEGNNConfig
    graph: tuple[np.ndarray, np.ndarray] | None = None   # set by _fit; a loaded model gets it from its weights

    def _fit(self, train: Sequences, valid, checkpoint_dir: Path | None) -> None:
        c = self.config
        self.graph = global_graph(self.encode(train.to_list()), len(self.catalog), c.epsilon, c.n_neighbors)
        super()._fit(train, valid, checkpoint_dir)

    def build_network(self):
        n, S = len(self.catalog), self.config.n_neighbors
        adj, weight = self.graph or (np.full((n + 1, S), n, np.int64), np.zeros((n + 1, S), np.float32))
        return GCEGNNNet(self.config, n, adj, weight)
