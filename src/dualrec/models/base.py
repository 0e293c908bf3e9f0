"""The one interface every recommender implements, and the shared machinery of score-based models.

A :class:`Recommender` is fitted on per-user training sequences and then, for any list of user histories (original
item ids, oldest first), returns ranked catalog item ids with scores. Evaluation, the CLI and the service only ever
talk to this interface, so they never know which model they drive (as RecBole's ``AbstractRecommender``).

Most models score the whole catalog at once; they subclass :class:`ScoringRecommender` and write only
``_fit`` and ``score``; masking the user's own history and taking the top k is done here, once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
import torch

from dualrec.data.catalog import Catalog
from dualrec.data.dataset import Sequences
from dualrec.integrity import verify_folder, write_manifest
from dualrec.models.registry import get_model_class
from dualrec.utils import seed_everything

if TYPE_CHECKING:
    from dualrec.evaluation.protocols import EvalCases


@dataclass
class Recommendations:
    """Ranked items per user. ``items[u]`` may be shorter than k (an LLM that named fewer real items).

    ``extras[u]`` carries what a hybrid wants to show or count (the LLM's text, titles that grounded to nothing, a
    fallback flag); ``timings`` holds seconds per named stage summed over the batch.
    """

    items: list[np.ndarray]
    scores: list[np.ndarray]
    extras: list[dict] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def concat(parts: Sequence["Recommendations"]) -> "Recommendations":
        timings: dict[str, float] = {}
        for p in parts:
            for k, v in p.timings.items():
                timings[k] = timings.get(k, 0.0) + v
        extras = None
        if any(p.extras is not None for p in parts):
            extras = [e for p in parts for e in (p.extras or [{}] * len(p))]
        return Recommendations([i for p in parts for i in p.items], [s for p in parts for s in p.scores], extras,
                               timings)


@dataclass
class ModelConfig:
    """Fields every model config has. Model configs subclass this (typed, with defaults from their paper)."""

    seed: int = 42

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict | None) -> "ModelConfig":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names - {"name"}
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{k: v for k, v in values.items() if k in names})


class Recommender(ABC):
    """Fit on training sequences, recommend for histories. Subclasses set ``name`` and ``config_class``."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    is_global_zero: bool = True   # False in the other processes of a multi-process (DDP) fit

    def __init__(self, config: ModelConfig | dict | None = None):
        if not isinstance(config, ModelConfig):
            config = self.config_class.from_dict(config)
        self.config = config
        self.catalog: Catalog | None = None
        self.fit_seconds: float = 0.0
        self.history: list[dict] = []   # the training loop's per-epoch log; empty for a model without one

    def fit(self, train: Sequences, catalog: Catalog, valid: "EvalCases | None" = None,
            checkpoint_dir: str | Path | None = None) -> "Recommender":
        """Train on ``train`` (per-user sequences of ids in ``catalog``). ``valid`` may drive early stopping;
        ``checkpoint_dir`` lets a long fit resume where it stopped."""
        seed_everything(self.config.seed)
        self.catalog = catalog
        start = time.perf_counter()
        self._fit(train, valid, Path(checkpoint_dir) if checkpoint_dir else None)
        self.fit_seconds = time.perf_counter() - start
        return self

    @abstractmethod
    def _fit(self, train: Sequences, valid: "EvalCases | None", checkpoint_dir: Path | None) -> None: ...

    @abstractmethod
    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        """Top-``k`` catalog items per history, best first, never an item of that history."""

    def close(self) -> None:
        """Release what the model holds outside Python (an LLM server, a loaded model); a no-op for most."""

    # ---- persistence: a folder with config.json (+ model.safetensors and whatever a model adds) -------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.name, "config": self.config.to_dict(), "fit_seconds": self.fit_seconds}
        (path / "config.json").write_text(json.dumps(meta, indent=2))
        self.catalog.items.assign(genres=self.catalog.items["genres"].map("|".join)).to_json(
            path / "catalog.json", orient="records", indent=0)
        (path / "genres.json").write_text(json.dumps(self.catalog.genre_names))
        self._save(path)
        write_manifest(path)  # last: it hashes every file the model wrote
        return path

    def _save(self, path: Path) -> None:
        """Write the model's weights/state (safetensors for tensors); the base already wrote config and catalog."""

    def _load(self, path: Path) -> None:
        """Read back what :meth:`_save` wrote."""

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """Load any saved model: the class comes from ``config.json``'s ``model`` field."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json; is this a folder written by `dualrec train`?")
        verify_folder(path)
        meta = json.loads((path / "config.json").read_text())
        model_cls = get_model_class(meta["model"]) if cls is Recommender else cls
        model = model_cls(meta["config"])
        items = pd.read_json(path / "catalog.json", orient="records", dtype={"item": "int64"})
        genre_names = json.loads((path / "genres.json").read_text())
        model.catalog = Catalog.from_frame(items, title_col="raw_title", genre_names=genre_names)
        model.fit_seconds = meta.get("fit_seconds", 0.0)
        model._load(path)
        return model


def load_on_catalog(path: str | Path, catalog: Catalog, what: str) -> Recommender:
    """A saved model to use inside another (a hybrid's Stage 1, DUIP's encoder), refused when it was trained on
    another catalog: its item rows would name other items. ``what`` names it in the error."""
    model = Recommender.load(path)
    if not np.array_equal(model.catalog.ids, catalog.ids):
        raise ValueError(f"{what} {path} was trained on a different catalog ({len(model.catalog)} items) than this "
                         f"run ({len(catalog)} items)")
    return model


@runtime_checkable
class Hybrid(Protocol):
    """A model built on a Stage-1 model whose ranking it re-orders or falls back to (DUALRec, the fusion ranker):
    per-user comparisons against "its own Stage 1" read it here."""

    stage1: Recommender | None


class ScoringRecommender(Recommender):
    """A model that scores every catalog item for a history; subclasses implement :meth:`score`.

    Item ids are mapped to rows ``0..n_items-1`` of :attr:`catalog` (see :meth:`encode`); :meth:`recommend`
    batches histories, masks each history's own items and takes the top k with ``torch.topk``.
    """

    batch_size: int = 512

    @abstractmethod
    def score(self, histories: list[np.ndarray]) -> "np.ndarray | Any":
        """Scores ``[len(histories), n_items]`` (numpy or torch), higher is better; histories as catalog rows."""

    def encode(self, histories: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Original ids -> catalog rows; items outside the catalog are dropped (a model cannot score them)."""
        out = []
        for h in histories:
            h = np.asarray(h, dtype=np.int64)
            out.append(self.catalog.rows(h[self.catalog.has(h)]))
        return out

    def recommend(self, histories: Sequence[np.ndarray], k: int = 10) -> Recommendations:
        rows = self.encode(histories)
        n_items = len(self.catalog)
        k = min(k, n_items)
        items, scores = [], []
        start = time.perf_counter()
        for lo in range(0, len(rows), self.batch_size):
            batch = rows[lo:lo + self.batch_size]
            s = self.score(batch)
            s = torch.tensor(s, dtype=torch.float32) if isinstance(s, np.ndarray) else s.float().clone()
            r = np.concatenate(batch) if batch else np.zeros(0, np.int64)
            b = np.repeat(np.arange(len(batch)), [len(x) for x in batch])
            s[torch.as_tensor(b), torch.as_tensor(r)] = float("-inf")
            top = torch.topk(s, k, dim=1)
            ids = self.catalog.ids[top.indices.numpy()]
            vals = top.values.numpy()
            for i in range(len(batch)):
                keep = np.isfinite(vals[i])
                items.append(ids[i][keep])
                scores.append(vals[i][keep])
        return Recommendations(items, scores, timings={"model": time.perf_counter() - start})
