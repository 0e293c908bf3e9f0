"""``dualrec benchmark``: the paper's comparison table, re-run with every model under the same protocol.

One YAML (configs/paper-table.yaml) lists the models, the protocols (``strict`` and ``paper``), the data and the
metrics. For each protocol the data is split once; each model is built from the registry, fitted on the training
split and scored by the one evaluator (:func:`dualrec.evaluation.evaluator.evaluate`) on the test cases, exactly
as ``dualrec evaluate`` does. Outputs under ``out``:

* ``<protocol>/<model>.json``: the full result record (config, data fingerprint, counts, timings, tuning);
* ``<protocol>.md`` and ``<protocol>.png``: a Markdown table and a bar chart of HR@k / NDCG@k per model;
* ``paper-table.md``: both protocols side by side with the numbers the DUALRec paper printed;
* ``runs/<protocol>/<model>/``: the saved model (and neural checkpoints, so an interrupted run resumes).

Design choices the issue leaves open:

* **Tuning** only on the validation split: a model entry may carry ``tune: {option: [values]}``; every combination
  is fitted on the training split, scored on ``Split.valid`` by ``tune_metric`` (NDCG@10), and the best model is
  the one tested (not refitted). Test cases are never seen during tuning.
* **Resuming**: a model whose result JSON already exists is not re-run (``force`` re-runs it); neural models also
  resume from their last epoch checkpoint.
* **Quick** (``--quick``): the first ``quick.users`` users, neural models trained ``quick.epochs`` epoch(s) on at
  most ``quick.max_windows`` windows (never more than the entry's own budget; an entry's own ``quick:`` options
  win), tuning grids cut to their first value, evaluation on at most ``quick.max_eval_users`` users: a smoke
  test of the whole pipeline in a minute, never numbers for docs (the CLI writes it to ``<out>-quick`` unless
  ``--out`` is given).
* **Seeds**: every fit is seeded with the benchmark seed (or the model entry's own ``seed``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dualrec import experiment as ex
from dualrec.config import DataConfig, EvalConfig, ExperimentConfig, _typed
from dualrec.data.dataset import Dataset
from dualrec.evaluation.protocols import make_split
from dualrec.evaluation.report import bar_chart, markdown_table
from dualrec.models import get_model_class
from dualrec.utils import source_commit

# The DUALRec paper's table (copied by its authors from the DUIP paper, i.e. measured under DUIP's protocol):
# model -> (HR@1, HR@5, NDCG@5). See ../shared/docs/paper-notes.md.
PAPER_TABLE: dict[str, tuple[float | None, float | None, float | None]] = {
    "mostpop": (0.0004, 0.0070, 0.0053), "slim": (0.1270, 0.3600, 0.2530), "fpmc": (0.1132, 0.3748, 0.2464),
    "narm": (0.1692, 0.5230, 0.3501), "stamp": (0.1584, 0.5078, 0.3367), "gcegnn": (0.1312, 0.4748, 0.3044),
    "mcprn": (0.1434, 0.4758, 0.3157), "hide": (0.1498, 0.4998, 0.3256), "attenmixer": (0.1490, 0.4932, 0.3216),
    "unisrec": (0.0508, 0.2508, 0.1459), "nir": (0.0572, 0.2326, 0.1436),
    "duip": (0.1883, None, None),   # the DUIP paper's own row (seed 004): HR@1 = NDCG@1 only
}
CHART_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")


@dataclass
class QuickConfig:
    """``--quick``: a smoke run of the whole table in minutes, its records labelled as such (never a result)."""

    users: int = 400              # the first N users of the data only
    epochs: int = 1               # at most this many epochs per neural model
    max_windows: int = 20000      # at most this many training rows per epoch
    max_eval_users: int = 200     # test users scored per model


@dataclass
class BenchmarkConfig:
    models: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "mostpop"}])
    protocols: list[str] = field(default_factory=lambda: ["strict", "paper"])
    data: DataConfig = field(default_factory=DataConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42
    out: str = "results/paper-table"
    runs: str | None = None    # where the trained run folders go; default ``<out>/runs``
    tune_metric: str = "NDCG@10"
    quick: QuickConfig = field(default_factory=QuickConfig)

    @classmethod
    def load(cls, path: str | Path) -> "BenchmarkConfig":
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"benchmark config {path} not found") from None
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> "BenchmarkConfig":
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        if set(raw) - known:
            raise ValueError(f"benchmark config: unknown key(s) {sorted(set(raw) - known)}; known: {sorted(known)}")
        models = [{"name": m} if isinstance(m, str) else dict(m) for m in raw.get("models", [{"name": "mostpop"}])]
        for i, m in enumerate(models):
            if "name" not in m:
                raise ValueError(f"benchmark config: models[{i}] has no name")
        return cls(models=models, protocols=list(raw.get("protocols", ["strict", "paper"])),
                   data=_typed(DataConfig, raw.get("data")), evaluation=_typed(EvalConfig, raw.get("evaluation")),
                   seed=int(raw.get("seed", 42)), out=str(raw.get("out", "results/paper-table")),
                   runs=raw.get("runs"),
                   tune_metric=str(raw.get("tune_metric", "NDCG@10")), quick=_typed(QuickConfig, raw.get("quick")))

    def select(self, names: list[str] | None) -> "BenchmarkConfig":
        """Only the model entries named in ``names`` (in config order); unknown names are an error."""
        if not names:
            return self
        listed = [m["name"] for m in self.models]
        missing = [n for n in names if n not in listed]
        if missing:
            raise ValueError(f"--models: {missing} not in the config's models {listed}")
        return dataclasses.replace(self, models=[m for m in self.models if m["name"] in names])


ENTRY_KEYS = ("name", "record", "tune", "quick")   # a model entry's keys that are not model options


def record_name(entry: dict) -> str:
    """The file stem of an entry's record and run folder: ``record`` (two runs of one model), else the model."""
    return entry.get("record") or entry["name"]


def candidate_options(entry: dict, quick: QuickConfig | None) -> list[dict]:
    """The option dicts to try for one model entry: the product of its ``tune`` grid (one dict if none)."""
    base = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
    grid = dict(entry.get("tune") or {})
    fields = {f.name for f in dataclasses.fields(get_model_class(entry["name"]).config_class)}
    if quick is not None:
        grid = {k: v[:1] for k, v in grid.items()}
        smoke = {"epochs": quick.epochs, "max_windows": quick.max_windows, "progress": False}
        for k in ("epochs", "max_windows"):   # quick never raises a budget (DUIP's 960 windows stay 960)
            if base.get(k) is not None:
                smoke[k] = min(smoke[k], base[k])
        smoke.update(entry.get("quick") or {})   # an entry's own smoke size (DUIP: a few hundred windows)
        base.update({k: v for k, v in smoke.items() if k in fields})
    keys = list(grid)
    return [{**base, **dict(zip(keys, values))} for values in itertools.product(*(grid[k] for k in keys))]


def run_benchmark(cfg: BenchmarkConfig, quick: bool = False, force: bool = False, progress: bool = True,
                  dataset=None) -> dict[str, list[dict]]:
    """Fit and score every listed model under every listed protocol; returns ``{protocol: [records]}``."""
    out = Path(cfg.out)
    base_cfg = ExperimentConfig(data=cfg.data, evaluation=cfg.evaluation, seed=cfg.seed)

    def smaller(ds: Dataset) -> Dataset:
        if not quick:
            return ds
        users = sorted(ds.interactions["user"].unique())[: cfg.quick.users]
        inter = ds.interactions
        return Dataset(f"{ds.name}-first{len(users)}users", inter[inter["user"].isin(users)].reset_index(drop=True),
                       ds.catalog, ds.reports, ds.filters)

    shared = smaller(dataset or ex.load_dataset(base_cfg))
    seqs = shared.sequences()
    records: dict[str, list[dict]] = {}
    for protocol in cfg.protocols:
        proto_cfg = dataclasses.replace(base_cfg, evaluation=dataclasses.replace(cfg.evaluation, protocol=protocol))
        if dataset is None and ex.top_items_source(proto_cfg) != ex.top_items_source(base_cfg):
            prepared = ex.prepare(proto_cfg, smaller(ex.load_dataset(proto_cfg)))  # e.g. chrono: train-side filter
        else:
            prepared = ex.Prepared(shared, make_split(seqs, protocol,
                                                      time_cuts=shared.filters.get("top_items_time_cuts")))
        evaluation = dataclasses.replace(cfg.evaluation, protocol=protocol,
                                         max_users=cfg.quick.max_eval_users if quick else cfg.evaluation.max_users)
        records[protocol] = []
        for entry in cfg.models:
            path = out / protocol / f"{record_name(entry)}.json"
            if path.exists() and not force:
                if progress:
                    print(f"[{protocol}] {record_name(entry)}: kept {path} (use --force to re-run)")
                records[protocol].append(json.loads(path.read_text()))
                continue
            runs = Path(cfg.runs) if cfg.runs and not quick else out / "runs"
            record = run_one(entry, evaluation, cfg, prepared, runs / protocol / record_name(entry), quick, progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2))
            records[protocol].append(record)
            if progress:
                m = record["metrics"]
                print(f"[{protocol}] {entry['name']}: HR@10={m['HR@10']:.4f} NDCG@10={m['NDCG@10']:.4f} "
                      f"fit {record['timings']['fit_s']:.1f}s, {record['timings']['users_per_s']:.0f} users/s")
        write_tables(records[protocol], out, protocol)
    (out / "paper-table.md").write_text(paper_comparison(records))
    return records


def run_one(entry: dict, evaluation: EvalConfig, cfg: BenchmarkConfig, prepared, run_dir: Path, quick: bool,
            progress: bool) -> dict:
    """Tune on the validation split (if the entry has a grid), then fit/save the chosen model and score the test."""
    def experiment(opts: dict) -> ExperimentConfig:
        return ExperimentConfig(model={"name": entry["name"], **opts}, data=cfg.data, evaluation=evaluation,
                                seed=cfg.seed)

    commit = source_commit()   # before the fit: the code that trains, whatever is committed meanwhile
    candidates = candidate_options(entry, cfg.quick if quick else None)
    tuning = []
    if len(candidates) == 1:
        chosen = experiment(candidates[0])
        model = ex.fit(chosen, prepared, run_dir)
    else:
        best = None
        for opts in candidates:
            trial_cfg = experiment(opts)
            trial = ex.fit(trial_cfg, prepared)
            val = ex.run_evaluation(trial_cfg, trial, prepared, split="valid", progress=False).metrics
            tuning.append({"options": opts, "valid": {k: val[k] for k in CHART_METRICS if k in val},
                           "fit_s": trial.fit_seconds})
            if progress:
                print(f"  tune {entry['name']} {opts}: valid {cfg.tune_metric}={val[cfg.tune_metric]:.4f}")
            if best is None or val[cfg.tune_metric] > best[0]:
                best = (val[cfg.tune_metric], trial_cfg, trial)
        _, chosen, model = best
        run_dir.mkdir(parents=True, exist_ok=True)
        chosen.dump(run_dir / "experiment.yaml")
        model.save(run_dir / "model")
    result = ex.run_evaluation(chosen, model, prepared, "test", progress)
    record = ex.result_record(chosen, model, prepared, result, "test")
    record["timings"]["users_per_s"] = result.counts["users"] / max(result.timings["total_s"], 1e-9)
    record["commit"] = commit
    record["run_dir"] = str(run_dir)
    record["history"] = getattr(model, "history", [])
    record["per_user"] = {"users": result.cases.users.tolist(), "ranks": result.ranks.tolist()}
    record["tuning"] = tuning
    record["quick"] = quick
    opts = chosen.model
    if opts.get("max_windows"):   # a budgeted neural fit says so wherever the record is shown
        n = opts["max_windows"]
        size = f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"
        unit = "rows" if getattr(model.config, "targets", "last") == "all" else "windows"   # all: rows of max_len
        record["label"] = f"{entry['name']} ({opts.get('epochs', '?')} ep x {size} {unit})"
    return record


def write_tables(records: list[dict], out: Path, protocol: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{protocol}.md").write_text(markdown_table(records) + "\n" + timing_table(records))
    bar_chart(records, out / f"{protocol}.png", metrics=CHART_METRICS)


def timing_table(records: list[dict]) -> str:
    lines = ["| model | fit s | inference users/s |", "|---|---:|---:|"]
    for r in records:
        t = r["timings"]
        lines.append(f"| {r.get('label') or r['model']} | {t['fit_s']:.1f} | {t['users_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


TABLE_METRICS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10")


# beyond accuracy (docs/protocols.md), at k = 10: record key -> column
BEYOND_TABLE = {"catalog_coverage@10": "coverage@10", "ild_genre@10": "ILD genre@10", "novelty@10": "novelty@10",
                "tail_share@10": "tail share@10"}


def records_table(records: list[dict], missing: list[str] = ()) -> str:
    """The paper table from its result records, as Markdown: each model's test metrics, the epoch validation kept
    out of those run, fit seconds and the DUALRec paper's printed HR@1 / HR@5 / NDCG@5 (another protocol and
    data: context only). ``missing`` names the config's models without a record yet."""
    protocols = sorted({r["protocol"] for r in records})
    head = ("| model | " + " | ".join(TABLE_METRICS) + " | kept epoch / run | fit s | paper HR@1 | paper HR@5 "
            "| paper NDCG@5 | " + " | ".join(BEYOND_TABLE.values()) + " |")
    lines = [f"Protocol: {', '.join(protocols)}. Data: " + ", ".join(sorted(
        {f"{r['data']['name']} ({r['data']['fingerprint']}, {r['data']['catalog_items']} items, "
         f"{r['counts']['users']} test users)" for r in records})) + ".", "", head,
             "|---|" + "---:|" * (len(TABLE_METRICS) + 5 + len(BEYOND_TABLE))]
    for r in records:
        history = r.get("history") or []
        scored = [h["val_ndcg10"] for h in history if "val_ndcg10" in h]
        kept = (f"{scored.index(max(scored)) + 1} / {len(history)}" if scored and r["config"]["model"].get("patience")
                else f"{len(history)} / {len(history)}" if history else "-")
        paper = PAPER_TABLE.get(r["model"]) or (None, None, None)
        cells = [f"{r['metrics'][m]:.4f}" for m in TABLE_METRICS] + [kept, f"{r['timings']['fit_s']:.0f}"]
        cells += [f"{v:.4f}" if v is not None else "-" for v in paper]
        cells += [f"{r['metrics'][m]:.4f}" if m in r["metrics"] else "-" for m in BEYOND_TABLE]
        lines.append(f"| {r.get('label') or r['model']} | " + " | ".join(cells) + " |")
    if missing:
        lines += ["", "Not yet run with this configuration: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def render_records(cfg: BenchmarkConfig, out: Path | None = None) -> dict[str, str]:
    """``{protocol: table}`` from the records of the config's models (none is re-run), found under ``out`` (default
    ``cfg.out``)."""
    blocks = {}
    for protocol in cfg.protocols:
        paths = [Path(out or cfg.out) / protocol / f"{record_name(m)}.json" for m in cfg.models]
        records = [json.loads(p.read_text()) for p in paths if p.exists()]
        if records:
            blocks[protocol] = records_table(records, [p.stem for p in paths if not p.exists()])
    return blocks


def paper_comparison(records: dict[str, list[dict]]) -> str:
    """HR@1 / HR@5 / NDCG@5 per model: the paper's printed numbers next to ours under each protocol."""
    protocols = list(records)
    by_model: dict[str, dict[str, dict]] = {}
    for p in protocols:
        for r in records[p]:
            by_model.setdefault(r.get("label") or r["model"], {})[p] = r
    cols = ["HR@1", "HR@5", "NDCG@5"]
    head = "| model | " + " | ".join(f"paper {c}" for c in cols) + " | " + " | ".join(
        f"{p} {c}" for p in protocols for c in cols) + " |"
    lines = [head, "|---|" + "---:|" * (len(cols) * (1 + len(protocols)))]
    for name, per in by_model.items():
        paper = PAPER_TABLE.get(name.split(" ")[0])
        cells = [f"{v:.4f}" if v is not None else "-" for v in paper] if paper else ["-"] * len(cols)
        for p in protocols:
            cells += [f"{per[p]['metrics'][c]:.4f}" if p in per else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    data = sorted({f"{r['data']['name']} ({r['data']['fingerprint']}, {r['data']['catalog_items']} items)"
                   for rs in records.values() for r in rs})
    users = {p: (rs[0]["counts"]["users"] if rs else 0) for p, rs in records.items()}
    return ("Data: " + ", ".join(data) + ". Test users per protocol: " + ", ".join(f"{p} {n}" for p, n in
                                                                                  users.items())
            + ". Paper columns: the DUALRec paper's table (baselines copied from DUIP, another protocol).\n\n"
            + "\n".join(lines) + "\n")
