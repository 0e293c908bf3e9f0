"""Shared base of the neural next-item models (LSTM, GRU4Rec, NARM, STAMP, SASRec, ...): data, loss, persistence.

A subclass writes only ``build_network``: an ``nn.Module`` mapping left-padded catalog rows ``[B, L]`` (the pad is
row ``n_items``) to the last position's logits ``[B, n_items]``. A sequence model's network also has
``positions(rows) -> [B, L, n_items]``, the logits at every position (position ``j`` seeing items ``<= j``), and
lists ``"all"`` in ``target_modes``. Here, once: the training rows for the two target modes, the default loss, the
optimizer, batched scoring for :class:`~dualrec.models.base.ScoringRecommender` and safetensors weights. The loop
itself (epochs, validation, early stopping, checkpoints, devices) is :mod:`dualrec.models.training`.

Target modes (config ``targets``):

* ``last``: one target per window, the item after the last ``max_len`` items (DUALRec's recipe for its Stage-1
  LSTM: windows of 30 movies, the 31st the target);
* ``all``: every position of a user's training sequence predicts its next item, the sequence cut into rows of
  ``max_len`` (:func:`~dualrec.data.windows.make_chunks`), padding masked out of the loss, as SASRec, GRU4Rec and
  BERT4Rec train. A sequence of ``n`` items then costs about ``n / max_len`` rows instead of ``n`` windows.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from safetensors.torch import load_file, save_file

from dualrec.data.dataset import Sequences
from dualrec.data.windows import IGNORE, make_chunks, make_windows
from dualrec.models import training
from dualrec.models.base import ModelConfig, ScoringRecommender
from dualrec.utils import pick_device


@dataclass
class NeuralConfig(ModelConfig):
    max_len: int = 30          # window length (DUALRec: 30 movies, the 31st is the target)
    min_len: int = 30          # real items before a target (30: full windows only; 1: every prefix)
    targets: str = "last"      # last: one target per window | all: every position of a row (sequence models)
    epochs: int = 10           # the most epochs; fewer when early stopping ends the fit
    patience: int | None = None  # stop after this many epochs without a better validation NDCG@10 (best kept)
    batch_size: int = 128      # rows per optimizer step, over all processes
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None  # clip the gradient norm to this
    precision: str = "32"      # 32 | bf16 (autocast) | auto: bf16 where the CPU/GPU has native bf16 matmuls
    device: str = "auto"       # auto: CUDA when present, else CPU
    devices: int = 1           # processes (CPU) or GPUs
    strategy: str = "auto"     # Lightning strategy: auto | ddp
    max_windows: int | None = None  # subsample training rows (smoke runs); None uses all
    epoch_rows: int | None = None   # an "epoch" of this many rows, walking on through the set (a learning curve)
    progress: bool = True


class NeuralRecommender(ScoringRecommender):
    config_class = NeuralConfig
    target_modes: ClassVar[tuple[str, ...]] = ("last",)   # ("last", "all") where the network has ``positions``

    @abstractmethod
    def build_network(self):
        """The ``nn.Module``: ``forward(rows [B, L]) -> logits [B, n_items]`` with pad row ``n_items``."""

    # ---- data ----------------------------------------------------------------------------------------------

    @property
    def pad(self) -> int:
        return len(self.catalog)

    def _pad_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """Last ``max_len`` items of each history (catalog rows), left-padded."""
        L = self.config.max_len
        out = np.full((len(histories), L), self.pad, dtype=np.int64)
        for i, h in enumerate(histories):
            h = h[-L:]
            if len(h):
                out[i, L - len(h):] = h
        return out

    def training_windows(self, train: Sequences) -> tuple[np.ndarray, np.ndarray]:
        """Training rows ``x [N, max_len]`` and targets: ``[N]`` (``last``) or ``[N, max_len]`` (``all``)."""
        c = self.config
        seqs = self.encode(train.to_list())
        if c.targets == "all":
            x, y = make_chunks(seqs, c.max_len, c.min_len, pad=self.pad)
        else:
            x, y, _ = make_windows(seqs, c.max_len, c.min_len, pad=self.pad)
        if c.max_windows and len(y) > c.max_windows:
            keep = np.sort(np.random.default_rng(c.seed).choice(len(y), c.max_windows, replace=False))
            x, y = x[keep], y[keep]
        return x, y

    def validation_windows(self, valid) -> training.ValidationWindows:
        """Held-out windows: the targets of each validation case, each after the items before it, with those
        items' rows to exclude from the ranking."""
        L = self.config.max_len
        if valid is None or len(valid) == 0:
            empty = np.zeros(0, np.int64)
            return training.ValidationWindows(np.zeros((0, L), np.int64), empty, empty, np.zeros(1, np.int64))
        seqs = [np.concatenate([h, t]) for h, t in zip(valid.histories, valid.targets)]
        rows = self.encode(seqs)
        first = [len(r) - len(t) for r, t in zip(rows, valid.targets)]
        x, y, owner = make_windows(rows, L, 1, pad=self.pad, first_target=first)
        # window i is the j-th target of its case: it sees the case's first (first + j) rows
        j = np.arange(len(owner)) - np.searchsorted(owner, owner)
        seen = np.asarray(first)[owner] + j
        return training.ValidationWindows(x, y, np.concatenate([rows[o][:k] for o, k in zip(owner, seen)]
                                                               + [np.zeros(0, np.int64)]),
                                          np.concatenate([[0], np.cumsum(seen)]))

    # ---- training ------------------------------------------------------------------------------------------

    def _fit(self, train: Sequences, valid, checkpoint_dir: Path | None) -> None:
        c = self.config
        if c.targets not in training.TARGET_MODES:
            raise ValueError(f"{self.name}: targets={c.targets!r}; choose one of {training.TARGET_MODES}")
        if c.targets not in self.target_modes:
            raise ValueError(f"{self.name}: targets={c.targets!r} needs an output at every position, and "
                             f"{self.name}'s network has one session-level output per history; use targets='last'")
        self.device = pick_device(c.device)
        x, y = self.training_windows(train)
        if len(y) == 0:
            raise ValueError(f"{self.name}: no training windows (sequences shorter than min_len={c.min_len}+1)")
        vwin = self.validation_windows(valid)
        self.net = self.build_network()
        task = training.train(self, x, y, vwin, checkpoint_dir)
        self.history = task.history
        self.is_global_zero = task.trainer.is_global_zero
        self.net.to(self.device).eval()

    def build_optimizer(self):
        """Adam over the network's trainable parameters; a model needing parameter groups (DUIP: a smaller
        learning rate for its language model) overrides this."""
        c = self.config
        return torch.optim.Adam([p for p in self.net.parameters() if p.requires_grad], lr=c.lr,
                                weight_decay=c.weight_decay)

    def training_step(self, xb, yb):
        """``(logits, loss)`` for one batch: the mean cross-entropy on the next item over every real target,
        ``logits [B, n_items]`` for ``yb [B]`` (``last``) or, for ``yb [B, L]`` (``all``), ``[M, n_items]`` at the
        ``M`` real targets only (padded positions are never scored: about half of a row of 200 is padding).
        A model with an extra loss term (HIDE's disentangling loss, DUIP's title generation) overrides this."""
        if yb.dim() == 2:
            real = yb != IGNORE
            return (logits := self.net.positions(xb, real)), F.cross_entropy(logits, yb[real])
        logits = self.net(xb)
        return logits, F.cross_entropy(logits, yb)

    # ---- inference -----------------------------------------------------------------------------------------

    def score(self, histories: list[np.ndarray]):
        with torch.no_grad():
            x = torch.as_tensor(self._pad_histories(histories)).to(self.device)
            return self.net(x).float().cpu()

    def hidden(self, histories: list[np.ndarray]):
        """The network's user representation for each history (used by DUIP's soft prompt); needs ``encode``."""
        x = torch.as_tensor(self._pad_histories(self.encode(histories))).to(self.device)
        return self.net.encode(x)

    # ---- persistence ---------------------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(path / "model.safetensors"))
        (path / "history.json").write_text(json.dumps(getattr(self, "history", []), indent=1))

    def _load(self, path: Path) -> None:
        self.device = pick_device(self.config.device)
        self.net = self.build_network()
        self.net.load_state_dict(load_file(str(path / "model.safetensors")))
        self.net.to(self.device).eval()
        hist = path / "history.json"
        self.history = json.loads(hist.read_text()) if hist.exists() else []


def at(states, where=None):
    """``states [B, L, d]`` at the positions ``where [B, L]`` marks, ``[M, d]``; all of them when ``where`` is None.
    A network's ``positions(rows, where)`` scores only there: the loss never needs a padded position's logits."""
    return states if where is None else states[where]


def training_curves(history: list[dict], path: str | Path, paper: dict | None = None) -> Path:
    """Loss and top-1/top-5 accuracy per epoch (train and validation), with the paper's final values dashed."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(13, 3.6))   # no pyplot: no global figure state, no GUI backend
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("loss", "top1", "top5"), ("loss", "top-1 accuracy", "top-5 accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            vals = [h.get(f"{split}_{key}", math.nan) for h in history]
            ax.plot(epochs, vals, style, label=split)
            if paper and f"{split}_{key}" in paper:
                ax.axhline(paper[f"{split}_{key}"], ls="--", lw=1, color=ax.lines[-1].get_color(),
                           label=f"paper {split}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)
