"""The one training loop of every neural model, on PyTorch Lightning.

A model (:class:`~dualrec.models.neural.NeuralRecommender`) brings its network, its optimizer and its loss
(``training_step(x, y) -> (logits, loss)``); :func:`train` does the rest, once for all of them:

* batches: a seeded permutation per epoch cut into global batches of ``batch_size`` rows; with ``devices > 1``
  (``strategy="ddp"``) rank ``r`` of ``w`` takes rows ``r, r + w, ...`` of every global batch, and each rank's
  loss is rescaled by its share of the global batch's targets, so the averaged DDP gradient is the gradient of the
  global batch's mean loss: the same updates as one process (up to float rounding and dropout draws);
* per epoch: train loss and top-1/top-5 accuracy over every target, seconds, rows/s and targets/s, and on the
  validation windows the loss, top-1/top-5 and NDCG@10 ranked over the whole catalog with the case's history
  excluded (under ``strict``, exactly the evaluator's NDCG@10 on the validation split);
* early stopping on validation NDCG@10 after ``patience`` epochs without a gain, the best epoch's weights kept;
  gradient-norm clipping (``grad_clip``); ``precision`` "bf16" (autocast) or "auto" (bf16 where the CPU or GPU
  multiplies bf16 natively, else fp32); a progress bar; ``checkpoint_dir/last.ckpt`` after every epoch, which the
  same call (the same command) resumes from.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from dualrec.data.windows import IGNORE
from dualrec.utils import cpu_has_native_bf16


TARGET_MODES = ("last", "all")
PRECISIONS = ("32", "bf16", "auto")


@dataclass
class ValidationWindows:
    """Held-out windows ``x [N, L]`` and targets ``y [N]``; ``seen`` lists, per window, the catalog rows of the
    case's history (excluded from the ranking): window ``i`` owns ``seen_items[seen_start[i]:seen_start[i + 1]]``."""

    x: np.ndarray
    y: np.ndarray
    seen_items: np.ndarray
    seen_start: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: np.ndarray) -> "ValidationWindows":
        """The windows ``keep`` (indices), with their history rows."""
        parts = [self.seen_items[self.seen_start[i]:self.seen_start[i + 1]] for i in keep]
        return ValidationWindows(self.x[keep], self.y[keep], np.concatenate(parts + [np.zeros(0, np.int64)]),
                                 np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]))


class GlobalBatches(torch.utils.data.Sampler):
    """Index lists of this rank's share of each global batch of a seeded per-epoch permutation; with
    ``epoch_rows`` an epoch is the next ``epoch_rows`` indices of a stream of seeded permutations instead (one pass
    over a large set cut into epochs, each validated and checkpointed: a learning curve that resumes)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 epoch_rows: int | None = None):
        if batch_size < world:
            raise ValueError(f"batch_size={batch_size} is smaller than the number of processes ({world})")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch_rows = epoch_rows
        self.epoch = 0

    @property
    def sampler(self):
        """Lightning calls ``set_epoch`` on a batch sampler's ``sampler`` at the start of every epoch (before the
        first batch is drawn: ``__iter__`` reads the epoch lazily)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if self.epoch_rows is None:
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        start, stop = self.epoch * self.epoch_rows, (self.epoch + 1) * self.epoch_rows
        passes = range(start // self.n, (stop - 1) // self.n + 1)
        stream = torch.cat([torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + p))
                            for p in passes])
        offset = start - passes[0] * self.n
        return stream[offset:offset + self.epoch_rows]

    def __iter__(self):
        order = self._order()
        for lo in range(0, len(order), self.batch_size):
            yield order[lo:lo + self.batch_size][self.rank::self.world].tolist()

    def __len__(self) -> int:
        return math.ceil((self.epoch_rows or self.n) / self.batch_size)


def epoch_line(name: str, row: dict, max_epochs: int) -> str:
    """One readable line per epoch: losses, top-5 accuracy, validation NDCG@10 and speed (history.json has all)."""
    parts = [f"loss {row['train_loss']:.3f}" + (f" (validation {row['val_loss']:.3f})" if "val_loss" in row else ""),
             f"top-5 {row['train_top5']:.3f}" + (f" (validation {row['val_top5']:.3f})" if "val_top5" in row else "")]
    if "val_ndcg10" in row:
        parts.append(f"validation NDCG@10 {row['val_ndcg10']:.4f}")
    parts.append(f"{row['seconds']:.0f} s, {row['targets_per_s']:,.0f} targets/s")
    return f"{name} epoch {row['epoch']}/{max_epochs}: " + ", ".join(parts)


def lightning_precision(precision: str, device: str) -> str:
    """Lightning's precision flag for the config's ``precision`` on ``device`` ("cpu", "cuda", "cuda:1")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        if device.startswith("cuda"):
            native = torch.cuda.is_bf16_supported()
        else:
            native = cpu_has_native_bf16()
        precision = "bf16" if native else "32"
    return "bf16-mixed" if precision == "bf16" else "32-true"


def flat_targets(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [M, n], targets [M])`` of the real targets: one per row (``y [B]``) or per position (``[B, L]``,
    with ``logits`` at every position or already at the real targets only)."""
    if logits.dim() == 2 and y.dim() == 2:
        return logits, y[y != IGNORE]
    logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    real = y != IGNORE
    return logits[real], y[real]


class SequenceTask(L.LightningModule):
    """A recommender's network, optimizer and loss inside Lightning's loop, with the per-epoch history."""

    def __init__(self, recommender, x: np.ndarray, y: np.ndarray, valid: ValidationWindows | None,
                 resuming: Path | None = None):
        super().__init__()
        self.recommender = recommender
        self.net = recommender.net
        self.data = torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
        self.valid = valid
        self.resuming = resuming
        self.history: list[dict] = []
        self.best: tuple[float, dict] | None = None   # with patience: (validation NDCG@10, weights) of the best epoch
        self.stopped = False                           # early stopping ended the fit (restored on resume)

    # ---- data and optimizer --------------------------------------------------------------------------------

    def train_dataloader(self):
        c = self.recommender.config
        batches = GlobalBatches(len(self.data), c.batch_size, c.seed, self.global_rank, self.trainer.world_size,
                                c.epoch_rows)
        return torch.utils.data.DataLoader(self.data, batch_sampler=batches)

    def configure_optimizers(self):
        return self.recommender.build_optimizer()

    def on_fit_start(self) -> None:
        # every submodule trains, a pre-trained part loaded in eval mode too (DUIP's LM: its LoRA dropout), as
        # Lightning keeps each submodule's mode as it finds it
        self.net.train()
        if self.resuming is not None and self.recommender.config.progress and self.trainer.is_global_zero:
            print(f"{self.recommender.name}: resuming from {self.resuming}", flush=True)

    # ---- one step ------------------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._sums = torch.zeros(5, dtype=torch.float64)   # loss, top1, top5, targets, rows (this rank)
        self._start = time.perf_counter()

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        logits, loss = self.recommender.training_step(xb, yb)
        logits, targets = flat_targets(logits.detach(), yb)
        n = torch.tensor(float(len(targets)), device=loss.device)
        total = self.trainer.strategy.reduce(n.clone(), reduce_op="sum") if self.trainer.world_size > 1 else n
        with torch.no_grad():
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            self._sums += torch.tensor([loss.item() * len(targets), (top5[:, 0] == targets).sum().item(),
                                        (top5 == targets[:, None]).any(1).sum().item(), len(targets), len(xb)],
                                       dtype=torch.float64)
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        # DDP averages the ranks' gradients: weighting each rank's mean by its share of the global batch's targets
        # makes that average the gradient of the global batch's mean loss
        return loss * (n * self.trainer.world_size / total.clamp(min=1.0))

    def on_train_epoch_end(self) -> None:
        seconds = time.perf_counter() - self._start
        sums = self._sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
        loss, top1, top5, targets, rows = sums.tolist()
        row = {"epoch": self.current_epoch + 1, "train_loss": loss / targets, "train_top1": top1 / targets,
               "train_top5": top5 / targets, "seconds": seconds, "rows_per_s": rows / seconds,
               "targets_per_s": targets / seconds}
        if self.valid is not None and len(self.valid):
            row.update(self.validate())
            self.log("val_ndcg10", row["val_ndcg10"], logger=False, sync_dist=True)
            better = self.best is None or row["val_ndcg10"] > self.best[0]
            if self.recommender.config.patience is not None and better:
                self.best = (row["val_ndcg10"], {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()})
        self.history.append(row)
        if self.recommender.config.progress and self.trainer.is_global_zero:
            print(epoch_line(self.recommender.name, row, self.trainer.max_epochs), flush=True)

    # ---- validation ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, batch_size: int = 1024) -> dict:
        """Loss, top-1/top-5 and NDCG@10 (history excluded, full catalog) over the validation windows."""
        v = self.valid
        was_training = self.net.training
        self.net.eval()
        loss = top1 = top5 = ndcg = 0.0
        for lo in range(0, len(v), batch_size):
            hi = min(lo + batch_size, len(v))
            logits = self.net(torch.as_tensor(v.x[lo:hi], device=self.device)).float()
            yb = torch.as_tensor(v.y[lo:hi], device=self.device)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            t5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (t5[:, 0] == yb).sum().item()
            top5 += (t5 == yb[:, None]).any(1).sum().item()
            owner = np.repeat(np.arange(hi - lo), np.diff(v.seen_start[lo:hi + 1]))
            seen = v.seen_items[v.seen_start[lo]:v.seen_start[hi]]
            logits[torch.as_tensor(owner, device=self.device), torch.as_tensor(seen, device=self.device)] = -torch.inf
            target = logits.gather(1, yb[:, None])
            rank = (logits > target).sum(1)                       # 0-based rank of the target
            hit = (rank < 10) & torch.isfinite(target[:, 0])      # a target in the history is never recommended
            ndcg += torch.where(hit, 1.0 / torch.log2(rank.double() + 2.0), 0.0).sum().item()
        if was_training:
            self.net.train()
        n = len(v)
        return {"val_loss": loss / n, "val_top1": top1 / n, "val_top5": top5 / n, "val_ndcg10": ndcg / n}

    # ---- checkpoints carry the history and the best weights ------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # saved after early stopping's decision of the epoch: a stopped fit stays stopped when resumed
        checkpoint["dualrec"] = {"history": self.history, "best": self.best, "stopped": self.trainer.should_stop}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("dualrec", {})
        self.history, self.best, self.stopped = state.get("history", []), state.get("best"), state.get("stopped")

    def on_train_start(self) -> None:
        if self.stopped:
            self.trainer.should_stop = True


def _accelerator(device: str, devices: int) -> tuple[str, int | list[int]]:
    if device.startswith("cuda"):
        return "gpu", [int(device.split(":")[1])] if ":" in device else devices
    return "cpu", devices


def train(recommender, x: np.ndarray, y: np.ndarray, valid: ValidationWindows | None,
          checkpoint_dir: Path | None) -> SequenceTask:
    """Fit ``recommender.net`` on rows ``x`` with targets ``y`` (``[N]`` or ``[N, L]``); returns the task, whose
    ``history`` holds one row per epoch and whose network ends with the best validation epoch's weights when
    ``patience`` is set (else the last epoch's)."""
    c = recommender.config
    accelerator, devices = _accelerator(recommender.device, c.devices)
    resume = checkpoint_dir / "last.ckpt" if checkpoint_dir is not None else None
    resume = resume if resume is not None and resume.exists() else None
    if resume is None and checkpoint_dir is not None and (checkpoint_dir / "last.pt").exists():
        warnings.warn(f"{checkpoint_dir / 'last.pt'} was written by the former training loop and cannot be resumed; "
                      "training starts from scratch")
    task = SequenceTask(recommender, x, y, valid, resume)
    callbacks = []
    if c.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 200, leave=False))
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_top_k=1, monitor=None,
                                         enable_version_counter=False, save_on_train_epoch_end=True))
    has_valid = valid is not None and len(valid) > 0
    if c.patience is not None and has_valid:
        callbacks.append(EarlyStopping(monitor="val_ndcg10", mode="max", patience=c.patience,
                                       check_on_train_epoch_end=True))
    for name in ("lightning.pytorch", "lightning.fabric"):   # device banners and tips: the epoch lines say enough
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = L.Trainer(accelerator=accelerator, devices=devices, strategy=c.strategy, max_epochs=c.epochs,
                        precision=lightning_precision(c.precision, recommender.device),
                        gradient_clip_val=c.grad_clip, callbacks=callbacks, logger=False,
                        enable_checkpointing=checkpoint_dir is not None, enable_progress_bar=c.progress,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        use_distributed_sampler=False)
    with warnings.catch_warnings():
        # one in-memory tensor dataset: worker processes would only copy it
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")   # Lightning's own use of a deprecated torch API
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")   # resuming: last.ckpt is there
        trainer.fit(task, ckpt_path=resume)
    if c.patience is not None and task.best is not None:
        task.net.load_state_dict(task.best[1])
    return task
