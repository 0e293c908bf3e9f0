"""MostPop: rank every item by its number of training interactions (the floor every model must beat)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from dualrec.data.dataset import Sequences
from dualrec.models.base import ScoringRecommender


class MostPop(ScoringRecommender):
    name = "mostpop"

    def _fit(self, train: Sequences, valid, checkpoint_dir) -> None:
        rows = self.catalog.rows(train.items[self.catalog.has(train.items)])
        self.counts = np.bincount(rows, minlength=len(self.catalog)).astype(np.float32)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts)))

    def _save(self, path: Path) -> None:
        save_file({"counts": self.counts}, str(path / "model.safetensors"))

    def _load(self, path: Path) -> None:
        self.counts = load_file(str(path / "model.safetensors"))["counts"]
