"""Shared base and trainer for neural next-item models (LSTM, GRU4Rec, NARM, STAMP, SASRec, ...).

A subclass writes only ``build_network`` (an ``nn.Module`` mapping left-padded catalog rows ``[B, L]`` to logits
``[B, n_items]``; the pad is row ``n_items``). Everything else is here, once: windows, the training loop with
per-epoch train/validation loss and top-1/top-5 accuracy, a progress bar, checkpoints every epoch to resume from,
seeding, safetensors weights, and batched scoring for :class:`~dualrec.models.base.ScoringRecommender`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualrec.data.dataset import Sequences
from dualrec.data.windows import make_windows
from dualrec.models.base import ModelConfig, ScoringRecommender


@dataclass
class NeuralConfig(ModelConfig):
    max_len: int = 30          # window length (DUALRec: 30 movies, the 31st is the target)
    min_len: int = 30          # real items a training window needs (30: full windows only; 1: every prefix)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: str = "auto"       # auto: CUDA when present, else CPU
    max_windows: int | None = None  # subsample training windows (smoke runs); None uses all
    progress: bool = True


class NeuralRecommender(ScoringRecommender):
    config_class = NeuralConfig

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
        c = self.config
        x, y, _ = make_windows(self.encode(train.to_list()), c.max_len, c.min_len, pad=self.pad)
        if c.max_windows and len(y) > c.max_windows:
            keep = np.sort(np.random.default_rng(c.seed).choice(len(y), c.max_windows, replace=False))
            x, y = x[keep], y[keep]
        return x, y

    def validation_windows(self, valid) -> tuple[np.ndarray, np.ndarray]:
        """Held-out windows: the targets of each validation case, each after the items before it."""
        if valid is None or len(valid) == 0:
            return np.zeros((0, self.config.max_len), np.int64), np.zeros(0, np.int64)
        seqs = [np.concatenate([h, t]) for h, t in zip(valid.histories, valid.targets)]
        rows = self.encode(seqs)
        first = [len(r) - len(t) for r, t in zip(rows, valid.targets)]
        x, y, _ = make_windows(rows, self.config.max_len, 1, pad=self.pad, first_target=first)
        return x, y

    # ---- training ------------------------------------------------------------------------------------------

    def _fit(self, train: Sequences, valid, checkpoint_dir: Path | None) -> None:
        import torch
        from tqdm.auto import tqdm

        from dualrec.utils import pick_device

        c = self.config
        self.device = pick_device(c.device)
        t0 = time.perf_counter()
        x, y = self.training_windows(train)
        vx, vy = self.validation_windows(valid)
        self.window_seconds = time.perf_counter() - t0
        if len(y) == 0:
            raise ValueError(f"{self.name}: no training windows (sequences shorter than min_len={c.min_len}+1)")
        self.net = self.build_network().to(self.device)
        opt = self.build_optimizer()
        self.history: list[dict] = []
        start_epoch = 0
        if checkpoint_dir and (checkpoint_dir / "last.pt").exists():
            state = torch.load(checkpoint_dir / "last.pt", map_location=self.device, weights_only=False)
            self.net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            self.history, start_epoch = state["history"], state["epoch"] + 1
            torch.set_rng_state(state["rng"])
            if c.progress:
                print(f"{self.name}: resuming from {checkpoint_dir / 'last.pt'} at epoch {start_epoch + 1}")
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)
        gen = torch.Generator().manual_seed(c.seed)
        for epoch in range(start_epoch, c.epochs):
            gen.manual_seed(c.seed + epoch)
            order = torch.randperm(len(yt), generator=gen)
            self.net.train()
            tot = {"loss": 0.0, "top1": 0.0, "top5": 0.0}
            seen = 0
            ep_start = time.perf_counter()
            bar = tqdm(range(0, len(order), c.batch_size), desc=f"{self.name} epoch {epoch + 1}/{c.epochs}",
                       unit="batch", disable=not c.progress, leave=False,
                       mininterval=1.0 if sys.stderr.isatty() else 30.0)
            for lo in bar:
                idx = order[lo:lo + c.batch_size]
                xb, yb = xt[idx].to(self.device), yt[idx].to(self.device)
                logits, loss = self.training_step(xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = len(idx)
                seen += n
                tot["loss"] += loss.item() * n
                with torch.no_grad():
                    top5 = logits.topk(5, dim=1).indices
                    tot["top1"] += (top5[:, 0] == yb).sum().item()
                    tot["top5"] += (top5 == yb[:, None]).any(1).sum().item()
                if lo // c.batch_size % 50 == 0:
                    bar.set_postfix(loss=f"{tot['loss'] / seen:.3f}")
            row = {"epoch": epoch + 1, "train_loss": tot["loss"] / seen, "train_top1": tot["top1"] / seen,
                   "train_top5": tot["top5"] / seen, "seconds": time.perf_counter() - ep_start,
                   "windows_per_s": seen / (time.perf_counter() - ep_start)}
            row.update(self._validate(vx, vy))
            self.history.append(row)
            if c.progress:
                print(f"{self.name} epoch {epoch + 1}/{c.epochs}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch",)))
            if checkpoint_dir:
                checkpoint_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"net": self.net.state_dict(), "opt": opt.state_dict(), "history": self.history,
                            "epoch": epoch, "rng": torch.get_rng_state()}, checkpoint_dir / "last.pt")
        self.net.eval()

    def build_optimizer(self):
        """Adam over the network's trainable parameters; a model needing parameter groups (DUIP: a smaller
        learning rate for its language model) overrides this."""
        import torch

        c = self.config
        return torch.optim.Adam([p for p in self.net.parameters() if p.requires_grad], lr=c.lr,
                                weight_decay=c.weight_decay)

    def training_step(self, xb, yb):
        """``(logits [B, n_items], loss)`` for one batch: cross-entropy on the next item. A model with an extra
        loss term (DUIP's title generation) overrides this."""
        import torch.nn.functional as F

        logits = self.net(xb)
        return logits, F.cross_entropy(logits, yb)

    def _validate(self, vx: np.ndarray, vy: np.ndarray) -> dict:
        import torch
        import torch.nn.functional as F

        if len(vy) == 0:
            return {}
        self.net.eval()
        loss = top1 = top5 = 0.0
        with torch.no_grad():
            for lo in range(0, len(vy), 1024):
                xb = torch.as_tensor(vx[lo:lo + 1024]).to(self.device)
                yb = torch.as_tensor(vy[lo:lo + 1024]).to(self.device)
                logits = self.net(xb)
                loss += F.cross_entropy(logits, yb, reduction="sum").item()
                t5 = logits.topk(5, dim=1).indices
                top1 += (t5[:, 0] == yb).sum().item()
                top5 += (t5 == yb[:, None]).any(1).sum().item()
        n = len(vy)
        return {"val_loss": loss / n, "val_top1": top1 / n, "val_top5": top5 / n}

    # ---- inference -----------------------------------------------------------------------------------------

    def score(self, histories: list[np.ndarray]):
        import torch

        with torch.no_grad():
            x = torch.as_tensor(self._pad_histories(histories)).to(self.device)
            return self.net(x).float().cpu()

    def hidden(self, histories: list[np.ndarray]):
        """The network's user representation for each history (used by DUIP's soft prompt); needs ``encode``."""
        import torch

        x = torch.as_tensor(self._pad_histories(self.encode(histories))).to(self.device)
        return self.net.encode(x)

    # ---- persistence ---------------------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  str(path / "model.safetensors"))
        (path / "history.json").write_text(json.dumps(getattr(self, "history", []), indent=1))

    def _load(self, path: Path) -> None:
        from safetensors.torch import load_file

        from dualrec.utils import pick_device

        self.device = pick_device(self.config.device)
        self.net = self.build_network()
        self.net.load_state_dict(load_file(str(path / "model.safetensors")))
        self.net.to(self.device).eval()
        hist = path / "history.json"
        self.history = json.loads(hist.read_text()) if hist.exists() else []


def training_curves(history: list[dict], path: str | Path, paper: dict | None = None) -> Path:
    """Loss and top-1/top-5 accuracy per epoch (train and validation), with the paper's final values dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in zip(axes, ("loss", "top1", "top5"), ("loss", "top-1 accuracy", "top-5 accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            vals = [h.get(f"{split}_{key}", math.nan) for h in history]
            ax.plot(epochs, vals, style, label=split)
            if paper and f"{split}_{key}" in paper:
                ax.axhline(paper[f"{split}_{key}"], ls="--", lw=1, color=ax.lines[-1].get_color(),
                           label=f"paper {split}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
