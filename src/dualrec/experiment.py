"""Runs an experiment: load data -> split by protocol -> fit -> evaluate -> write JSON + Markdown.

A run folder holds ``experiment.yaml`` (the resolved config), ``model/`` (the saved model) and, after evaluation,
``result-<protocol>-<split>.json`` and ``.md``. The CLI, the benchmark and tests all go through these functions.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from dualrec.config import ExperimentConfig
from dualrec.data.dataset import Dataset
from dualrec.evaluation.evaluator import EvalResult, evaluate
from dualrec.evaluation.protocols import Split, make_split
from dualrec.models import Recommender, build_model


@dataclass
class Prepared:
    dataset: Dataset
    split: Split


TOP_ITEMS_SOURCES = ("all", "train")


def top_items_source(cfg: ExperimentConfig) -> str:
    """Where the top-items filter counts popularity: ``data.top_items_from``, else ``train`` under ``chrono`` (a
    time split must not see future popularity) and ``all`` under ``strict`` and ``paper`` (the DUALRec paper's
    choice, kept so those rows compare with the paper)."""
    source = cfg.data.top_items_from or ("train" if cfg.evaluation.protocol == "chrono" else "all")
    if source not in TOP_ITEMS_SOURCES:
        raise ValueError(f"data.top_items_from must be one of {TOP_ITEMS_SOURCES}, got {source!r}")
    return source


def load_dataset(cfg: ExperimentConfig) -> Dataset:
    """The configured data after the top-items filter. With ``top_items_from: train`` the protocol splits the
    unfiltered data, popularity is counted on that split's training side, and (under ``chrono``) the time cuts are
    kept in ``filters["top_items_time_cuts"]`` so :func:`prepare` splits the filtered data at the same instants.
    With ``data.shuffle_order`` (an ablation) every user's items are then put in a seeded random order."""
    if cfg.data.shuffle_order and cfg.evaluation.protocol == "chrono":
        raise ValueError("data.shuffle_order reorders each user's items, which a global time cut (chrono) cannot "
                         "use; choose protocol strict or paper")
    dataset = filtered_dataset(cfg)
    return dataset.shuffled_order(cfg.seed) if cfg.data.shuffle_order else dataset


def filtered_dataset(cfg: ExperimentConfig) -> Dataset:
    """The configured data after the top-items filter (:func:`load_dataset` without the shuffle)."""
    from dualrec.data.movielens import load

    d = cfg.data
    source = top_items_source(cfg)
    raw = load(d.name, d.data_dir, ratings=d.ratings, items=d.items, errors=d.errors)
    if source == "all":
        return raw.top_items(d.top_items, source="all")
    if not d.top_items:
        return raw
    first = make_split(raw.sequences(), cfg.evaluation.protocol)
    dataset = raw.top_items(d.top_items, counted=first.train.items, source="train")
    if "time_cuts" in first.counts:
        dataset.filters["top_items_time_cuts"] = list(first.counts["time_cuts"])
    return dataset


def prepare(cfg: ExperimentConfig, dataset: Dataset | None = None) -> Prepared:
    dataset = dataset or load_dataset(cfg)
    return Prepared(dataset, make_split(dataset.sequences(), cfg.evaluation.protocol,
                                        time_cuts=dataset.filters.get("top_items_time_cuts")))


def fit(cfg: ExperimentConfig, prepared: Prepared, run_dir: str | Path | None = None) -> Recommender:
    """Build and fit the configured model; with ``run_dir`` save it and the resolved config there."""
    model = build_model(cfg.model_name, cfg.model_options())
    ckpt = Path(run_dir) / "checkpoints" if run_dir else None
    model.fit(prepared.split.train, prepared.dataset.catalog, valid=prepared.split.valid, checkpoint_dir=ckpt)
    if run_dir and model.is_global_zero:   # the other processes of a multi-process fit write nothing
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # the run says which catalog it was trained on (a copy: the caller's config may be shared)
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, top_items_from=top_items_source(cfg))).dump(
            run_dir / "experiment.yaml")
        model.save(run_dir / "model")
    return model


def run_evaluation(cfg: ExperimentConfig, model: Recommender, prepared: Prepared, split: str = "test",
                   progress: bool = True) -> EvalResult:
    cases = prepared.split.test if split == "test" else prepared.split.valid
    if cfg.evaluation.max_users:
        cases = cases.head(cfg.evaluation.max_users)
    return evaluate(model, cases, prepared.dataset.catalog, cfg.evaluation.ks, cfg.evaluation.batch_size, progress)


def result_record(cfg: ExperimentConfig, model: Recommender, prepared: Prepared, result: EvalResult,
                  split: str = "test") -> dict:
    """Everything needed to trust or redo a number: model, config, protocol, data fingerprint, counts, timings."""
    import torch

    return {
        "model": model.name,
        "config": cfg.to_dict(),
        "protocol": cfg.evaluation.protocol,
        "protocol_note": PROTOCOL_NOTES[cfg.evaluation.protocol],
        "split": split,
        "data": {"name": prepared.dataset.name, "fingerprint": prepared.dataset.fingerprint(),
                 "interactions": len(prepared.dataset.interactions), "catalog_items": len(prepared.dataset.catalog),
                 "filters": prepared.dataset.filters, "skipped": {r.source: dict(r.skipped)
                                                                  for r in prepared.dataset.reports},
                 "split_counts": prepared.split.counts},
        "metrics": result.metrics,
        "counts": result.counts,
        "timings": {**result.timings, "fit_s": model.fit_seconds},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpu": torch.backends.cpu.get_cpu_capability(),
                        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")},
    }


PROTOCOL_NOTES = {
    "strict": "leave-one-out, full ranking over the catalog, history excluded, every user counted",
    "paper": "DUALRec authors' protocol: 70/15/15 users, last 5 items are targets, hit = any top-k in the 5",
    "chrono": "DUIP's global time cut 80/10/10, every held-out interaction a case, full ranking",
}


def write_result(record: dict, out_dir: str | Path) -> Path:
    from dualrec.evaluation.report import markdown_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"result-{record['protocol']}-{record['split']}"
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown_table([record]))
    return out_dir / f"{stem}.json"


def run_config(path: str | Path) -> ExperimentConfig:
    """A run's saved ``experiment.yaml``; one saved before ``data.top_items_from`` existed was filtered on all data,
    so it says ``all`` whatever its protocol's default is now."""
    cfg = ExperimentConfig.load(path)
    if "top_items_from" not in ((yaml.safe_load(Path(path).read_text()) or {}).get("data") or {}):
        cfg.data.top_items_from = "all"
    return cfg


def load_run(run_dir: str | Path, data_dir: str | Path | None = None,
             ratings: str | Path | None = None) -> tuple[ExperimentConfig, Recommender]:
    """A run's config and model; ``data_dir``/``ratings`` point its data section at where the data lies now."""
    run_dir = Path(run_dir)
    if not (run_dir / "experiment.yaml").exists():
        raise FileNotFoundError(f"{run_dir}: no experiment.yaml; create a run with `dualrec train --out {run_dir}`")
    cfg = run_config(run_dir / "experiment.yaml")
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    if ratings is not None:
        cfg.data.ratings = str(ratings)
    return cfg, Recommender.load(run_dir / "model")
