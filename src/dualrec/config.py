"""Typed experiment configuration: one YAML file (configs/*.yaml) + ``--set a.b=value`` overrides.

Configuration flows from one place (as in RecBole): the CLI, the benchmark and the service all build an
:class:`ExperimentConfig`, and the model's own options go to its typed ``ModelConfig`` unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    name: str = "ml-1m"            # ml-1m | ml-100k | path to an interactions CSV/Parquet
    data_dir: str | None = None    # else $DUALREC_DATA_DIR, else the user cache dir
    ratings: str | None = None     # ML-1M ratings.dat lying elsewhere (e.g. the shared half copy)
    items: str | None = None       # items file for a generic interactions file
    top_items: int | None = 1000   # DUALRec keeps the 1,000 most-rated movies
    top_items_from: str | None = None  # all (the DUALRec paper) | train (the split's training side only);
    #                                  None: train for chrono (no future popularity), all for strict and paper
    errors: str = "skip"           # skip (count) or raise on bad lines
    shuffle_order: bool = False    # ablation: every user's items in a seeded random order (train and test alike)


@dataclass
class EvalConfig:
    protocol: str = "strict"       # strict | paper | chrono
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    batch_size: int = 256
    max_users: int | None = None   # smoke runs only; reported, never used for docs/results.md
    title_diversity: bool = True   # Sentence-BERT title diversity of the lists (embeds the catalog once, cached)


@dataclass
class ExperimentConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"name": "lstm"})
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def model_options(self) -> dict[str, Any]:
        """The model's own options, with the experiment seed unless the model section sets one."""
        opts = {k: v for k, v in self.model.items() if k != "name"}
        opts.setdefault("seed", self.seed)
        return opts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ExperimentConfig":
        raw = dict(raw or {})
        unknown = set(raw) - {"model", "data", "evaluation", "seed"}
        if unknown:
            raise ValueError(f"unknown top-level config key(s): {sorted(unknown)}")
        model = raw.get("model", {"name": "lstm"})
        if isinstance(model, str):
            model = {"name": model}
        if "name" not in model:
            raise ValueError("config: model.name is required")
        return cls(model=dict(model), data=_typed(DataConfig, raw.get("data")),
                   evaluation=_typed(EvalConfig, raw.get("evaluation")), seed=int(raw.get("seed", 42)))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "ExperimentConfig":
        raw: dict = {}
        if path is not None:
            try:
                raw = yaml.safe_load(Path(path).read_text()) or {}
            except FileNotFoundError:
                raise FileNotFoundError(f"config file {path} not found") from None
        for item in overrides or []:
            apply_override(raw, item)
        return cls.from_dict(raw)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _typed(cls, values: dict | None):
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    return cls(**values)


def apply_override(raw: dict, item: str) -> None:
    """``"model.epochs=2"`` sets ``raw["model"]["epochs"] = 2`` (the value parsed as YAML)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. model.epochs=2)")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if isinstance(node, str):  # "model: lstm" shorthand
            raise ValueError(f"override {item!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(value)
