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

import torch
import yaml

from dualrec.config import ExperimentConfig
from dualrec.data.dataset import Dataset
from dualrec.data.movielens import load
from dualrec.evaluation.beyond import ItemStats
from dualrec.evaluation.evaluator import EvalResult, evaluate
from dualrec.evaluation.protocols import EvalCases, Split, get_protocol, make_split
from dualrec.evaluation.report import markdown_table
from dualrec.llm.rerank import SBERTReranker
from dualrec.models import Recommender, build_model
from dualrec.utils import source_commit


@dataclass
class Prepared:
    dataset: Dataset
    split: Split
    stats: ItemStats | None = None   # the beyond-accuracy metrics' item statistics, computed on first use


TOP_ITEMS_SOURCES = ("all", "train")


def top_items_source(cfg: ExperimentConfig) -> str:
    """Where the top-items filter counts popularity: ``data.top_items_from``, else ``train`` under ``chrono`` (a
    time split must not see future popularity) and ``all`` under ``strict`` and ``paper`` (the DUALRec paper's
    choice, kept so those rows compare with the paper)."""
    source = cfg.data.top_items_from or get_protocol(cfg.evaluation.protocol).top_items_from
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


def item_stats(cfg: ExperimentConfig, prepared: Prepared) -> ItemStats:
    """Popularity counted on the split's training side and, with ``evaluation.title_diversity``, the catalog's
    Sentence-BERT title embeddings (computed once per catalog, then read from the on-disk cache)."""
    if prepared.stats is None or (prepared.stats.title_embeddings is None) == cfg.evaluation.title_diversity:
        catalog = prepared.dataset.catalog
        embeddings, note = None, "evaluation.title_diversity is false"
        if cfg.evaluation.title_diversity:
            try:
                embeddings = SBERTReranker().catalog_embeddings(catalog)
            except ImportError as exc:
                note = str(exc)
        prepared.stats = ItemStats.of(catalog, prepared.split.train, embeddings, note)
    return prepared.stats


def evaluation_cases(cfg: ExperimentConfig, prepared: Prepared, split: str = "test") -> EvalCases:
    """The cases a run is scored on: the split's, cut to ``evaluation.max_users`` when set."""
    cases = prepared.split.test if split == "test" else prepared.split.valid
    return cases.head(cfg.evaluation.max_users) if cfg.evaluation.max_users else cases


def run_evaluation(cfg: ExperimentConfig, model: Recommender, prepared: Prepared, split: str = "test",
                   progress: bool = True) -> EvalResult:
    return evaluate(model, evaluation_cases(cfg, prepared, split), prepared.dataset.catalog, cfg.evaluation.ks,
                    cfg.evaluation.batch_size, progress, item_stats(cfg, prepared))


def result_record(cfg: ExperimentConfig, model: Recommender, prepared: Prepared, result: EvalResult,
                  split: str = "test") -> dict:
    """Everything needed to trust or redo a number: model, config, protocol, data fingerprint, counts, timings."""
    return {
        "model": model.name,
        "config": cfg.to_dict(),
        "protocol": cfg.evaluation.protocol,
        "protocol_note": get_protocol(cfg.evaluation.protocol).note,
        "split": split,
        "data": {"name": prepared.dataset.name, "fingerprint": prepared.dataset.fingerprint(),
                 "interactions": len(prepared.dataset.interactions), "catalog_items": len(prepared.dataset.catalog),
                 "filters": prepared.dataset.filters, "skipped": {r.source: dict(r.skipped)
                                                                  for r in prepared.dataset.reports},
                 "split_counts": prepared.split.counts},
        "metrics": result.metrics,
        **({"metric_notes": result.notes} if result.notes else {}),
        "counts": result.counts,
        "timings": {**result.timings, "fit_s": model.fit_seconds},
        "commit": source_commit(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "cpu": torch.backends.cpu.get_cpu_capability(),
                        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")},
    }


def write_result(record: dict, out_dir: str | Path) -> Path:
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


ACCURACY_PREFIXES = ("HR@", "NDCG@", "MRR@", "genre_jaccard")


def record_model(record: dict, cfg: ExperimentConfig, prepared: Prepared) -> Recommender:
    """The model a fusion record describes, rebuilt without choosing anything again: Stage 1 from its folder and the
    record's chosen weights; a signal with weight 0 is not computed (it changes no ranking)."""
    if cfg.model_name != "fusion" or not record.get("alpha"):
        raise ValueError(f"a {cfg.model_name!r} record without a run: give --run, the folder its model was saved in "
                         f"(only a fusion record, with its chosen weights, rebuilds from its config)")
    weights = {k: v for k, v in record["alpha"].items() if v}
    options = {**cfg.model, "weights": weights, "signals": [s for s in cfg.model.get("signals", []) if s in weights]}
    model = build_model("fusion", {k: v for k, v in options.items() if k != "name"} | {"seed": cfg.seed})
    model.fit(prepared.split.train, prepared.dataset.catalog)
    return model


def refresh_record(record_path: str | Path, run_dir: str | Path | None = None, data_dir: str | Path | None = None,
                   ratings: str | Path | None = None, progress: bool = True) -> dict:
    """Re-score a result record's model on the record's own users and add the metrics it lacks (beyond accuracy),
    without refitting: the model comes from ``run_dir`` (a `dualrec train` folder) or, for a fusion record, from
    its config and chosen weights. The accuracy metrics must come out as recorded (the same model on the same users),
    else nothing is written. The record gains ``refreshed`` (what re-scored it, when, which metrics were added)."""
    record_path = Path(record_path)
    text = record_path.read_text()
    record = json.loads(text)
    lines = text.splitlines()
    indent = len(lines[1]) - len(lines[1].lstrip()) if len(lines) > 1 else None   # written back as it was
    if "metrics" not in record or "config" not in record:
        raise ValueError(f"{record_path}: not a result record (no metrics/config)")
    cfg = ExperimentConfig.from_dict(record["config"])
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    if ratings is not None:
        cfg.data.ratings = str(ratings)
    if run_dir is not None:
        run_cfg, model = load_run(run_dir, data_dir, ratings)
        if run_cfg.evaluation.protocol != cfg.evaluation.protocol:
            raise ValueError(f"{run_dir} was trained under {run_cfg.evaluation.protocol!r}, the record {record_path} "
                             f"is {cfg.evaluation.protocol!r}")
    prepared = prepare(cfg)
    if prepared.dataset.fingerprint() != record["data"]["fingerprint"]:
        raise ValueError(f"{record_path}: recorded on data {record['data']['fingerprint']}, this data is "
                         f"{prepared.dataset.fingerprint()}; point --data-dir/--ratings at the record's data")
    if run_dir is None:
        model = record_model(record, cfg, prepared)
    result = run_evaluation(cfg, model, prepared, record.get("split", "test"), progress)
    users = (record.get("per_user") or {}).get("users")
    if users is not None and result.cases.users.tolist() != users:
        raise ValueError(f"{record_path}: scored other users than the record's {len(users)}")
    old = record["metrics"]
    differ = {m: (old[m], result.metrics[m]) for m in old if m.startswith(ACCURACY_PREFIXES)
              and m in result.metrics and abs(old[m] - result.metrics[m]) > 1e-9}
    if differ:
        shown = ", ".join(f"{m} {a:.4f} recorded, {b:.4f} now" for m, (a, b) in list(differ.items())[:3])
        raise ValueError(f"{record_path}: {'run ' + str(run_dir) if run_dir else 'its config'} does not reproduce "
                         f"the record ({shown}): other weights or data; nothing written")
    added = sorted(m for m in result.metrics if not m.startswith(ACCURACY_PREFIXES) and m not in ("coverage",
                                                                                                 "hallucination_rate"))
    record["metrics"].update({m: result.metrics[m] for m in added})
    if result.notes:
        record["metric_notes"] = result.notes
    record["refreshed"] = {"by": f"dualrec evaluate --record {record_path}" + (f" --run {run_dir}" if run_dir else ""),
                           "date": time.strftime("%Y-%m-%d"), "added": added, "commit": source_commit()}
    record_path.write_text(json.dumps(record, indent=indent or None, default=str))
    model.close()
    return record
