"""``dualrec tradeoff``: accuracy against diversity and coverage as MMR's lambda moves, for several saved models on
the same users.

Each run's model ranks the users once (its top ``n_candidates`` with scores); MMR (:mod:`dualrec.models.mmr`)
re-orders that ranking for every lambda, and the one evaluator's metric code (:func:`list_metrics`) scores each
re-ranked list. The record (``results/<protocol>/tradeoff.json``) holds every point's metrics and the frontier
comparison; the Markdown table and the PNG plot are rendered from it.

Frontier comparison: the first run is the reference (Stage 1). For every point ``h`` of every other run and each
diversity axis (genre intra-list diversity and catalog coverage, at k = 10), the reference can reach ``h``'s
diversity with one of its points at least as diverse, or with a mixture of two grid points (a share of the users
gets one lambda's lists, the rest the other's) exactly as diverse; the most accurate of these, ``s``, is compared
with ``h`` on NDCG@10 by the paired bootstrap (per-user differences, same users, 1,000 resamples). An interval
above 0 puts ``h`` beyond the reference + MMR frontier (no lambda of the reference, nor a mix of two, is as diverse
and as accurate); below 0, ``h`` is dominated; otherwise no difference is shown.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
import numpy as np
from matplotlib.figure import Figure

from dualrec import experiment as ex
from dualrec.evaluation.bootstrap import bootstrap_interval, per_user
from dualrec.evaluation.evaluator import list_metrics, recommend_in_batches
from dualrec.evaluation.protocols import get_protocol
from dualrec.rows import weights_digest
from dualrec.utils import source_commit
from dualrec.models.mmr import SIMILARITIES, rerank

AXES = ("ild_genre@10", "catalog_coverage@10")
ACCURACY = "NDCG@10"
TABLE_COLUMNS = (("NDCG@10", "NDCG@10"), ("HR@10", "HR@10"), ("ild_genre@10", "ILD genre@10"),
                 ("ild_title@10", "ILD title@10"), ("catalog_coverage@10", "coverage@10"), ("gini@10", "Gini@10"),
                 ("novelty@10", "novelty@10"), ("tail_share@10", "tail share@10"))


@dataclass
class TradeoffConfig:
    runs: list[str]                                   # run folders (`dualrec train`); the first is the reference
    labels: list[str] = field(default_factory=list)   # one per run (default: model name and folder)
    lambdas: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    n_candidates: int = 20                            # each model's top N that MMR re-orders
    similarity: str = "genre"                         # MMR's item similarity: genre | title
    split: str = "test"
    max_users: int | None = None                      # the first N cases only (labelled in the record)
    seed: int = 42                                    # bootstrap resampling seed

    def __post_init__(self):
        if not self.runs:
            raise ValueError("tradeoff: give at least one run")
        if self.labels and len(self.labels) != len(self.runs):
            raise ValueError(f"tradeoff: {len(self.labels)} labels for {len(self.runs)} runs")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"tradeoff: similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        bad = [x for x in self.lambdas if not 0.0 <= x <= 1.0]
        if bad or not self.lambdas:
            raise ValueError(f"tradeoff: lambdas must lie in [0, 1], got {self.lambdas}")


def run_tradeoff(cfg: TradeoffConfig, data_dir: str | Path | None = None, ratings: str | Path | None = None,
                 progress: bool = True) -> dict:
    """Score every run at every lambda on the same cases; the record (see the module docstring)."""
    prepared_by_data: dict[str, ex.Prepared] = {}
    models, ranks, fingerprints = [], [], set()
    protocol = cases = stats = None
    for i, run in enumerate(cfg.runs):
        run_cfg, model = ex.load_run(run, data_dir, ratings)
        if cfg.max_users is not None:
            run_cfg.evaluation.max_users = cfg.max_users
        if protocol is not None and run_cfg.evaluation.protocol != protocol:
            raise ValueError(f"{run} was trained under {run_cfg.evaluation.protocol!r}, {cfg.runs[0]} under "
                             f"{protocol!r}: a trade-off compares models on the same users")
        protocol = run_cfg.evaluation.protocol
        key = json.dumps(asdict(run_cfg.data), sort_keys=True)
        if key not in prepared_by_data:
            prepared_by_data[key] = ex.prepare(run_cfg)
        prepared = prepared_by_data[key]
        fingerprints.add(prepared.dataset.fingerprint())
        if len(fingerprints) > 1:
            raise ValueError(f"{run}: its data differs from the first run's ({sorted(fingerprints)})")
        catalog = prepared.dataset.catalog
        if not np.array_equal(model.catalog.ids, catalog.ids):
            raise ValueError(f"{run}: trained on another catalog ({len(model.catalog)} items) than its data's")
        run_cases = ex.evaluation_cases(run_cfg, prepared, cfg.split)
        if cases is not None and run_cases.users.tolist() != cases.users.tolist():
            raise ValueError(f"{run}: its {cfg.split} users differ from the first run's")
        cases, stats, ks = run_cases, ex.item_stats(run_cfg, prepared), run_cfg.evaluation.ks
        vectors = stats.genres if cfg.similarity == "genre" else stats.title_embeddings
        if vectors is None:
            raise ValueError(f"tradeoff: similarity {cfg.similarity!r} needs {stats.notes.get('ild_title')}")
        start = time.perf_counter()
        base = recommend_in_batches(model, cases.histories, max(cfg.n_candidates, max(ks)),
                                    run_cfg.evaluation.batch_size, progress, desc=f"rank {run}")
        points, run_ranks = [], []
        for lam in cfg.lambdas:
            items = rerank(base.items, base.scores, catalog, lam, max(ks), cfg.n_candidates, vectors,
                           cfg.similarity)
            metrics, r = list_metrics(items, cases, catalog, ks, stats)
            points.append({"lambda": lam, "metrics": metrics})
            run_ranks.append(r)
        label = cfg.labels[i] if cfg.labels else f"{model.name} ({Path(run).name})"
        models.append({"run": str(run), "label": label, "model": model.name, "points": points,
                       "weights_digest": weights_digest(Path(run) / "model"),
                       "seconds": time.perf_counter() - start})
        ranks.append(run_ranks)
        model.close()
    prepared = next(iter(prepared_by_data.values()))
    return {
        "kind": "tradeoff", "protocol": protocol, "protocol_note": get_protocol(protocol).note, "split": cfg.split,
        "users": len(cases), "test_users": len(prepared.split.test if cfg.split == "test" else prepared.split.valid),
        "data": {"name": prepared.dataset.name, "fingerprint": prepared.dataset.fingerprint(),
                 "catalog_items": len(prepared.dataset.catalog)},
        "config": asdict(cfg), "metric_notes": stats.notes, "models": models,
        "frontier": frontier(models, ranks, cfg.seed),
        "commit": source_commit(),
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "date": time.strftime("%Y-%m-%d")},
    }


def reference_at(points: list[dict], axis: str, value: float) -> tuple[float, int, int] | None:
    """The most accurate way the reference reaches at least ``value`` on ``axis``: one of its points, or a mixture
    of two (a share ``w`` of users served by point ``a``'s lists, the rest by ``b``'s), whose expected axis value is
    exactly ``value``. Returns ``(w, a, b)`` (``a == b`` for a single point), or None when no point is that diverse.
    The mixture is the straight line between two grid points, so the frontier is not an artefact of the grid."""
    x = [p["metrics"][axis] for p in points]
    y = [p["metrics"][ACCURACY] for p in points]
    options = [(y[j], 1.0, j, j) for j in range(len(points)) if x[j] >= value]
    for i in range(len(points)):
        for j in range(len(points)):
            if x[i] < value < x[j]:
                w = (x[j] - value) / (x[j] - x[i])
                options.append((w * y[i] + (1 - w) * y[j], w, i, j))
    if not options:
        return None
    _, w, i, j = max(options, key=lambda o: o[0])
    return w, i, j


def frontier(models: list[dict], ranks: list[list[np.ndarray]], seed: int = 42) -> list[dict]:
    """Every non-reference point against the most accurate reference point, or mixture of two, at least as diverse
    (module docstring); the NDCG@10 difference with its paired-bootstrap interval."""
    ref = models[0]
    out = []
    for m, m_ranks in zip(models[1:], ranks[1:]):
        for p, p_ranks in zip(m["points"], m_ranks):
            for axis in AXES:
                row = {"label": m["label"], "lambda": p["lambda"], "axis": axis, "value": p["metrics"][axis],
                       ACCURACY: p["metrics"][ACCURACY]}
                best = reference_at(ref["points"], axis, p["metrics"][axis])
                if best is None:
                    out.append({**row, "verdict": "no reference point is this diverse (not tested)"})
                    continue
                w, i, j = best
                reference = w * per_user(ranks[0][i], ACCURACY) + (1 - w) * per_user(ranks[0][j], ACCURACY)
                diff = per_user(p_ranks, ACCURACY) - reference
                lo, hi = bootstrap_interval(diff, seed=seed)
                verdict = "beyond the reference frontier" if lo > 0 else "dominated" if hi < 0 else \
                    "no difference shown"
                lambdas = [ref["points"][i]["lambda"], ref["points"][j]["lambda"]]
                out.append({**row, "reference_lambdas": lambdas if i != j else lambdas[:1], "reference_weight": w,
                            "reference_value": w * ref["points"][i]["metrics"][axis]
                            + (1 - w) * ref["points"][j]["metrics"][axis],
                            "reference_" + ACCURACY: float(reference.mean()), "delta": float(diff.mean()),
                            "interval": [lo, hi], "verdict": verdict})
    return out


def markdown(record: dict) -> str:
    """The points table and the frontier table of a trade-off record."""
    cols = [(k, name) for k, name in TABLE_COLUMNS if any(k in p["metrics"] for m in record["models"]
                                                          for p in m["points"])]
    c = record["config"]
    sample = "" if record["users"] == record["test_users"] else f" (first {record['users']} of {record['test_users']})"
    lines = [f"**Protocol `{record['protocol']}`** ({record['protocol_note']}); {record['users']} {record['split']} "
             f"users{sample}, every model on the same ones. Data: {record['data']['name']} "
             f"({record['data']['fingerprint']}). MMR over each model's top {c['n_candidates']}, {c['similarity']} "
             f"similarity; lambda 1 = the model's own ranking.", "",
             "| model | lambda | " + " | ".join(name for _, name in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for m in record["models"]:
        for p in m["points"]:
            lines.append(f"| {m['label']} | {p['lambda']:g} | " + " | ".join(
                f"{p['metrics'][k]:.4f}" if k in p["metrics"] else "-" for k, _ in cols) + " |")
    lines.append("")
    lines.append("Weights (sha256 of the safetensors): " + ", ".join(f"{m['label']} {m['weights_digest']}"
                                                                    for m in record["models"]) + ".")
    if record.get("metric_notes"):
        lines.append("Not computed: " + "; ".join(f"{k}: {v}" for k, v in record["metric_notes"].items()) + ".")
    rows = record["frontier"]
    if rows:
        ref = record["models"][0]["label"]
        lines += ["", f"Each point against the most accurate {ref} + MMR point at least as diverse on the axis, or "
                  f"mixture of two of its points (w x lambda_a + (1 - w) x lambda_b: a share w of the users gets "
                  f"lambda_a's lists) exactly as diverse: delta NDCG@10 with its paired-bootstrap 95 % interval "
                  f"(1,000 resamples).", "",
                  "| model | lambda | axis | value | NDCG@10 | reference lambda (value) | reference NDCG@10 | "
                  "delta NDCG@10 [95 % CI] | verdict |", "|---|---:|---|---:|---:|---:|---:|---|---|"]
        for f in rows:
            if "interval" in f:
                lo, hi = f["interval"]
                lams = f["reference_lambdas"]
                mix = f"{lams[0]:g}" if len(lams) == 1 else \
                    f"{f['reference_weight']:.2f} x {lams[0]:g} + {1 - f['reference_weight']:.2f} x {lams[1]:g}"
                lines.append(f"| {f['label']} | {f['lambda']:g} | {f['axis']} | {f['value']:.4f} | "
                             f"{f[ACCURACY]:.4f} | {mix} ({f['reference_value']:.4f}) | "
                             f"{f['reference_' + ACCURACY]:.4f} | {f['delta']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
                             f"{f['verdict']} |")
            else:
                lines.append(f"| {f['label']} | {f['lambda']:g} | {f['axis']} | {f['value']:.4f} | "
                             f"{f[ACCURACY]:.4f} | - | - | - | {f['verdict']} |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path: str | Path) -> Path:
    """NDCG@10 against genre diversity and against catalog coverage (k = 10), one line per model over lambda."""
    fig = Figure(figsize=(6 * len(AXES), 4.5))
    axes = fig.subplots(1, len(AXES))
    for ax, axis in zip(np.atleast_1d(axes), AXES):
        for m in record["models"]:
            x = [p["metrics"][axis] for p in m["points"]]
            y = [p["metrics"][ACCURACY] for p in m["points"]]
            ax.plot(x, y, marker="o", label=m["label"])
            for p, xi, yi in zip(m["points"], x, y):
                if p["lambda"] in (1.0, 0.5, 0.0):
                    ax.annotate(f"λ={p['lambda']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4),
                                fontsize=8)
        ax.set_xlabel(axis)
        ax.set_ylabel(ACCURACY)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(f"accuracy vs diversity as MMR's lambda moves ({record['protocol']}, {record['users']} users)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def write_outputs(record: dict, record_path: str | Path, plot_path: str | Path | None = None) -> None:
    """The record and its plot (the docs' table is rendered from the record by ``dualrec table render``)."""
    record_path = Path(record_path)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))
    if plot_path:
        plot(record, plot_path)


def parse_lambdas(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--lambdas must be comma-separated numbers in [0, 1], got {text!r}") from None

