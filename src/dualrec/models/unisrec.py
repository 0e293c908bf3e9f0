"""UniSRec, universal sequence representations from item text (Hou, Mu, Zhao, Li, Ding & Wen, KDD 2022).

Item text (paper, "Universal Textual Item Representation"): each item's text is embedded once by a frozen
pre-trained language model, giving ``x_i``. Here the text is the catalog's title and genres (``"Toy Story (1995).
Animation, Children's, Comedy"``; the paper concatenates an Amazon item's title, categories and brand) and the
encoder is the project's Sentence-BERT (all-MiniLM-L6-v2, 384-d, L2-normalised, through
:meth:`dualrec.llm.rerank.SBERTReranker.catalog_embeddings`, cached on disk). The vectors are fixed data, a buffer
of the network: saved with the weights, so a loaded model ranks without re-encoding.

Universal item representation (same section; equations as the paper writes them, code as the authors' RecBole
model, RUCAIBox/UniSRec ``unisrec.py``: ``PWLayer``, ``MoEAdaptorLayer``):

* parametric whitening per expert, ``x~_i^(k) = (x_i - b_k) W_k``, ``W_k`` from N(0, 0.02), with dropout on
  ``x_i`` (``adaptor_dropout_prob``);
* a mixture of the ``G`` whitened views, ``v_i = sum_k g_k x~_i^(k)``, with the gate
  ``g = softmax(x_i W_2 + delta)`` and, in training only, ``delta = N(0, 1) * (softplus(x_i W_3) + 0.01)``
  (noisy gating; the paper's Norm() is the standard normal draw; ``W_2``, ``W_3`` start at 0 as in RecBole);
* transductive setting ("Parameter-Efficient Fine-tuning", ``train_stage: transductive_ft``): ``v_i + e_i``
  with a learned ID embedding ``e_i``, for the inputs and for scoring; inductive (``transductive=False``): ``v_i``.

The adaptor runs ONCE per batch over the whole catalog (one ``[n_items, 384] x [384, G * d]`` matmul); the
sequence's inputs are rows of that table, and the same table, L2-normalised, scores every item.

Universal sequence representation (paper, "Universal Sequence Representation"): SASRec's encoder, shared with
:mod:`dualrec.models.sasrec` (:func:`~dualrec.models.sasrec.attention_blocks`,
:func:`~dualrec.models.sasrec.run_blocks`): the input ``Dropout(LayerNorm(v_i (+ e_i) + p_j))`` (RecBole's
order), ``num_blocks`` causal self-attention blocks, and the last position's output ``s``. Fine-tuning scores:
``cos(s, v_i (+ e_i)) / tau`` with ``tau = 0.07``, trained by the shared full-softmax cross-entropy (RecBole's
fine-tuning loss, ``loss_type: CE`` over all items) on the last position of every prefix window (RecBole's
augmentation; ``targets="all"``, every position a target, is offered as for SASRec).

Defaults from the authors' ``props/UniSRec.yaml``: 2 layers, 2 heads, d = 300, dropout 0.5 (hidden and attention),
8 experts, adaptor dropout 0.2, tau 0.07, transductive fine-tuning, initialisation N(0, 0.02); RecBole's Adam with
lr 0.001.

Not here: the pre-training stage (sequence-item and sequence-sequence contrastive losses over five Amazon
domains), because this project has one target domain and no multi-domain corpus to pre-train on. The model is
trained from scratch on the target data, as the paper's and the authors' "w/o pre-training" variant
(``finetune.py -d <dataset>`` without ``-p``), with every parameter trained (nothing pre-trained to freeze).

Departures (why):

* Sentence-BERT 384-d mean-pooled vectors instead of BERT-base 768-d [CLS] vectors (the project's text encoder;
  no model hub).
* ``b_k`` starts at the catalog's mean text vector instead of 0 (``center_text``; the equation is unchanged and
  ``b_k`` still learned). Sentence vectors of movie titles share one large direction (the normalised item vectors
  at initialisation had a mean of norm 0.88: the anisotropy that WhitenRec, arXiv 2402.10602, measures), so every
  item looks alike to the encoder; from scratch the sequence representation then collapsed to one constant vector
  (popularity; the loss stuck at 6.74) at d = 128 and lr 0.005, which centring fixed, and in the short fit at
  lr 0.001 centring gives NDCG@10 0.103 against 0.092. Above lr 0.001 (0.002 with dropout 0.2) a d = 300 fit can
  still collapse: keep RecBole's 0.001.
* max length 30 instead of RecBole's 50 (the project's window; the same NDCG@10 in the short fit, 0.096 against
  0.095, and 1076 against 650 training windows/s on one thread) and batch 128 instead of RecBole's 2048 (2048
  windows' activations overflow a CPU's caches: 312 against 743 windows/s at length 50; and 16x the updates per
  epoch on a short budget).
* SASRec's blocks as this project writes them (Kang & McAuley: layer-normed queries, ReLU feed-forward of width d,
  a final layer norm) instead of RecBole's post-norm BERT blocks (GELU, inner size 256); positions counted from the
  right (the last item always has the last position), as our SASRec.
* In training, the adaptor's dropout mask and gate noise are drawn once per item per batch (shared by every
  occurrence of that item in the batch and by the scored table), and one mask serves all experts, where RecBole
  draws them per occurrence and per expert: that is what lets the adaptor run once over the catalog.
* Training matmuls under bf16 autocast where the hardware has native bf16 (``precision="auto"``, the shared
  trainer's; 5x fp32 matmul throughput on an AVX512-BF16 core); weights, cosine scores and all inference stay fp32.
  Dropout masks come from ``torch.rand`` (:class:`~dualrec.models.sasrec.RandDropout`, the same distribution as
  ``nn.Dropout``, 3-4x faster on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from dualrec.data.catalog import Catalog
from dualrec.llm.rerank import SBERTReranker
from dualrec.models.neural import NeuralConfig, NeuralRecommender, at
from dualrec.models.sasrec import RandDropout, attention_blocks, run_blocks


@dataclass
class UniSRecConfig(NeuralConfig):
    max_len: int = 30             # RecBole MAX_ITEM_LIST_LENGTH: 50
    min_len: int = 1
    hidden: int = 300             # hidden_size (= adaptor_layers[1])
    num_blocks: int = 2           # n_layers
    num_heads: int = 2            # n_heads
    dropout: float = 0.5          # hidden_dropout_prob = attn_dropout_prob
    n_experts: int = 8            # n_exps (G)
    adaptor_dropout: float = 0.2  # adaptor_dropout_prob
    noisy_gating: bool = True
    center_text: bool = True      # b_k starts at the mean text vector (RecBole: 0)
    temperature: float = 0.07
    transductive: bool = True     # train_stage: transductive_ft (text + ID); False: inductive_ft (text only)
    init_std: float = 0.02        # initializer_range
    lr: float = 0.001
    batch_size: int = 128         # RecBole train_batch_size: 2048
    precision: str = "auto"       # training matmuls under bf16 autocast where the hardware has native bf16
    cache: str | None = None      # text-vector cache folder; None: $DUALREC_CACHE or the user cache

    @classmethod
    def from_dict(cls, values: dict | None) -> "UniSRecConfig":
        """Also reads configs saved with the former ``bf16`` switch (None/True/False: precision auto/bf16/32)."""
        values = dict(values or {})
        if "bf16" in values:
            values.setdefault("precision", {None: "auto", True: "bf16", False: "32"}[values.pop("bf16")])
        return super().from_dict(values)


def item_texts(catalog: Catalog) -> list[str]:
    """The text embedded per item: title and genres, ``"Toy Story (1995). Animation, Children's, Comedy"``."""
    return [f"{t}. {', '.join(g)}" if len(g) else t for t, g in zip(catalog.items["title"], catalog.items["genres"])]


class UniSRec(NeuralRecommender):
    name = "unisrec"
    config_class = UniSRecConfig
    target_modes = ("last", "all")
    _text: np.ndarray | None = None

    def text_vectors(self) -> np.ndarray:
        """Sentence-BERT vectors of :func:`item_texts`, ``[n_items, 384]`` (cached on disk by the re-ranker)."""
        return SBERTReranker(cache_dir=self.config.cache).catalog_embeddings(self.catalog, item_texts(self.catalog))

    def _fit(self, train, valid, checkpoint_dir: Path | None) -> None:
        self._text = self.text_vectors()
        super()._fit(train, valid, checkpoint_dir)

    def _load(self, path: Path) -> None:
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            self._text = f.get_tensor("text").numpy()   # the saved vectors: no re-encoding, identical rankings
        super()._load(path)

    def build_network(self):
        if self._text is None or len(self._text) != len(self.catalog):
            raise RuntimeError("unisrec: no text vectors for this catalog (fit or load the model)")
        return UniSRecNet(self.config, torch.as_tensor(np.asarray(self._text, dtype=np.float32)))


class UniSRecNet(nn.Module):
    """Item rows ``[B, L]`` -> ``cos(s, v_i (+ e_i)) / tau`` over the catalog; ``text [n_items, t]`` are the fixed
    text vectors ``x_i``."""

    def __init__(self, c: UniSRecConfig, text: torch.Tensor):
        super().__init__()
        n, t = text.shape
        d, L, G = c.hidden, c.max_len, c.n_experts
        self.c, self.n, self.d, self.L, self.G, self.t = c, n, d, L, G, t
        self.register_buffer("text", text.clone())                                    # x_i, fixed
        self.expert_w = nn.Parameter(torch.empty(t, G, d).normal_(0.0, c.init_std))   # W_k (whitening)
        self.expert_b = nn.Parameter(text.mean(0).repeat(G, 1) if c.center_text       # b_k (whitening)
                                     else torch.zeros(G, t))
        self.w_gate = nn.Parameter(torch.zeros(t, G))                                 # W_2 (gate)
        self.w_noise = nn.Parameter(torch.zeros(t, G))                                # W_3 (gate noise)
        self.adaptor_drop = RandDropout(c.adaptor_dropout)
        self.id_emb = nn.Embedding(n, d) if c.transductive else None                  # e_i
        self.pos_emb = nn.Embedding(L, d)
        self.ln_in = nn.LayerNorm(d, eps=1e-12)
        self.drop = RandDropout(c.dropout)
        self.blocks = attention_blocks(d, c.num_heads, c.num_blocks, c.dropout, RandDropout)
        self.ln_out = nn.LayerNorm(d, eps=1e-8)
        self.register_buffer("causal", torch.triu(torch.ones(L, L, dtype=torch.bool), 1), persistent=False)
        for m in self.modules():   # RecBole's SASRec._init_weights: N(0, initializer_range), zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, c.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.MultiheadAttention):
                nn.init.normal_(m.in_proj_weight, 0.0, c.init_std)
                nn.init.zeros_(m.in_proj_bias)

    def items(self):
        """``v_i (+ e_i)`` for every catalog item, ``[n_items, d]`` (whitening + MoE), once per call."""
        n, t, G, d = self.n, self.t, self.G, self.d
        x = self.text
        logits = x @ self.w_gate
        if self.training and self.c.noisy_gating:
            logits = logits + torch.randn_like(logits) * (F.softplus(x @ self.w_noise) + 1e-2)
        g = logits.softmax(-1)                                                     # [n, G]
        views = (self.adaptor_drop(x) @ self.expert_w.view(t, G * d)).view(n, G, d)  # x W_k
        views = views - torch.einsum("gt,tgd->gd", self.expert_b, self.expert_w)    # - b_k W_k
        v = torch.einsum("ng,ngd->nd", g, views)
        return v + self.id_emb.weight if self.id_emb is not None else v

    def states(self, rows, v, last_only: bool = True):
        """The sequence representation ``s`` (before L2 normalisation) at the last position, ``[B, d]``, or with
        ``last_only=False`` at every position, ``[B, T, d]``."""
        T = rows.shape[1]
        pad = rows == self.n
        x = F.embedding(rows, torch.cat([v, v.new_zeros(1, self.d)])) + self.pos_emb.weight[self.L - T:]
        x = self.drop(self.ln_in(x)) * (~pad).unsqueeze(-1).to(x.dtype)
        return self.ln_out(run_blocks(self.blocks, x, pad, self.causal, self.c.num_heads, last_only))

    def encode(self, rows):
        """The sequence representation ``s`` at the last position, ``[B, d]``."""
        return self.states(rows, self.items())

    def scores(self, s, v):
        with torch.autocast(s.device.type, enabled=False):   # fp32 cosines: bf16 logits are coarse
            return F.normalize(s.float(), dim=-1) @ F.normalize(v.float(), dim=-1).T / self.c.temperature

    def forward(self, rows):
        v = self.items()
        return self.scores(self.states(rows, v), v)

    def positions(self, rows, where=None):
        """Scores after every position, ``[B, T, n_items]``; with a mask ``where [B, T]`` only there, ``[M, n_items]``."""
        v = self.items()
        return self.scores(at(self.states(rows, v, last_only=False), where), v)
