"""The rows of the DUALRec and ranker tables: each row one ``ExperimentConfig`` (a configs/dualrec*.yaml plus
overrides), fitted and scored by :mod:`dualrec.experiment`, its result record written to
``<out>/<protocol>/<row>.json``. The tables are rendered from those records by :mod:`dualrec.tables`, never here.

    dualrec table run --protocol paper --stage1 runs/lstm-paper/model --adapter models/lora-embedded-paper \
        --data-dir ../shared/data --ratings ../shared/data/ml-1m-ratings-head/ratings.dat [--rows dualrec,...]

A record holds the metrics, counts, per-stage timings, config, data fingerprint, the per-user first-hit ranks and,
for a hybrid, the paired-bootstrap interval against its own Stage 1 (about 2-60 kB, no MovieLens rows). Rows sharing
a prompt share the on-disk LLM response cache, so the "with/without SBERT" and "leaky" rows cost no extra
generation. A row scored on fewer users than the protocol's full test set (``max_users``) says so in its label and
its file name: a sample is never presented as the full set.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualrec import experiment as ex
from dualrec.config import ExperimentConfig
from dualrec.evaluation.bootstrap import paired_bootstrap
from dualrec.evaluation.metrics import first_hit_ranks, ranking_metrics
from dualrec.models import Recommender
from dualrec.models.base import Hybrid

COLUMNS = ("HR@1", "HR@5", "HR@10", "NDCG@1", "NDCG@5", "NDCG@10", "genre_jaccard", "hallucination_rate",
           "catalog_coverage@10", "ild_genre@10", "ild_title@10", "novelty@10")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    config: str | None                       # None: Stage 1 alone
    overrides: dict = field(default_factory=dict)
    protocols: tuple[str, ...] = ("strict", "paper")
    adapter: bool = False                    # the row uses --adapter (and is skipped without one)


FALLBACK = " + Stage-1 fallback for unanswered users"
ROWS = (
    Row("lstm", "LSTM alone (Stage 1)", None),
    Row("llm-only", "LLM alone prompt, zero-shot (no LSTM hint)" + FALLBACK, "configs/dualrec-llm-only.yaml",
        {"model.rerank": False}),
    Row("llm-only-sbert", "LLM alone prompt, zero-shot + SBERT re-rank" + FALLBACK, "configs/dualrec-llm-only.yaml"),
    Row("dualrec", "DUALRec zero-shot" + FALLBACK, "configs/dualrec.yaml", {"model.rerank": False}),
    Row("dualrec-sbert", "DUALRec zero-shot + SBERT re-rank" + FALLBACK, "configs/dualrec.yaml"),
    Row("lora", "DUALRec + LoRA" + FALLBACK, "configs/dualrec-lora.yaml", {"model.rerank": False}, adapter=True),
    Row("lora-sbert", "DUALRec + LoRA + SBERT re-rank" + FALLBACK, "configs/dualrec-lora.yaml", adapter=True),
    Row("constrained", "beyond: catalog-constrained beam search (k=10)", "configs/dualrec-constrained.yaml"),
    Row("score", "beyond: LLM scores the LSTM's top-20", "configs/dualrec-score.yaml"),
    Row("leaky", "DUALRec zero-shot + SBERT, LEAKY re-rank (authors' code: targets in the reference list)"
        + FALLBACK, "configs/dualrec.yaml", {"model.leaky_rerank": True}, ("paper",)),
    # the ranker over Stage 1's top 20 (models/fusion.py): weights chosen on validation unless fixed
    Row("dualrec-rank-sbert", "ranker: Stage 1 + SBERT similarity to the recent titles, fused",
        "configs/dualrec-rank.yaml", {"model.signals": ["sbert"]}),
    Row("dualrec-rank-zeroshot", "ranker: Stage 1 + zero-shot LLM verbalizer, fused", "configs/dualrec-rank.yaml"),
    Row("dualrec-rank", "ranker: Stage 1 + LoRA LLM verbalizer, fused", "configs/dualrec-rank.yaml", adapter=True),
    Row("dualrec-rank-sbert-lora", "ranker: Stage 1 + LoRA LLM verbalizer + SBERT, fused",
        "configs/dualrec-rank.yaml", {"model.signals": ["llm", "sbert"]}, adapter=True),
    Row("llm-rank-only", "LoRA LLM verbalizer alone over Stage 1's top 20 (weights fixed: LLM 1, Stage 1 0)",
        "configs/dualrec-rank.yaml", {"model.weights": {"stage1": 0.0, "llm": 1.0}}, adapter=True),
)


def run_row(row: Row, protocol: str, stage1: str, adapter: str | None, data: dict, max_users: int | None,
            out_dir: Path, prepared_cache: dict, llm_overrides: tuple[str, ...] = ()) -> dict:
    """Score one row and write its record. ``llm_overrides`` (``KEY=VALUE``, as ``dualrec evaluate --set``) apply to
    every row that has an LLM, e.g. another base model for the whole table; the LSTM row ignores them."""
    overrides = [f"evaluation.protocol={protocol}", f"model.stage1={stage1}"]
    overrides += [f"data.{k}={v}" for k, v in data.items() if v is not None]
    overrides += [f"{k}={json.dumps(v)}" for k, v in row.overrides.items()]
    if adapter and row.adapter:
        overrides.append(f"model.adapter={adapter}")
    if max_users:
        overrides.append(f"evaluation.max_users={max_users}")
    if row.config is None:
        cfg = ExperimentConfig.load("configs/lstm.yaml", [o for o in overrides if not o.startswith("model.")])
    else:
        cfg = ExperimentConfig.load(row.config, overrides + list(llm_overrides))
    key = (protocol, json.dumps(data, sort_keys=True))
    if key not in prepared_cache:
        prepared_cache[key] = ex.prepare(cfg)
    prepared = prepared_cache[key]
    if row.config is None:
        model = Recommender.load(stage1)
    else:
        model = ex.fit(cfg, prepared)
    if cfg.model.get("leaky_rerank"):
        cases = prepared.split.test
        model.leak_targets(cases.histories, cases.targets)
    start = time.perf_counter()
    result = ex.run_evaluation(cfg, model, prepared)
    record = ex.result_record(cfg, model, prepared, result)
    if row.config is None:   # a loaded Stage 1: its own options (epochs, targets), not configs/lstm.yaml's defaults
        record["config"]["model"] = {"name": model.name, **model.config.to_dict()}
    max_k = max(cfg.evaluation.ks)
    base = stage1_ranks(model, result, max_k) if row.config is not None else None   # its own Stage 1, same users
    record["answered"] = answered_vs_stage1(model, result, cfg.evaluation.ks, base)
    if row.config is not None:   # which LLM answered, in which precision (the config may say "auto")
        record["llm"] = model.llm_identity()
    record["per_user"] = {"users": result.cases.users.tolist(), "ranks": result.ranks.tolist()}
    record["s_per_user"] = record["timings"]["s_per_user"]
    if "coverage" in record["metrics"]:
        record["coverage"] = record["metrics"]["coverage"]
    if base is not None:         # the paired-bootstrap interval against that Stage 1
        record["ci"] = paired_bootstrap(result.ranks, base, ("NDCG@10", "HR@10"), seed=cfg.seed)
    if cfg.model_name == "fusion":
        record["alpha"] = model.config.weights
        record["selection"] = model.selection
    if adapter and row.adapter:   # how the adapter was trained: its examples and its learning curve (loss per step)
        record["adapter_training"] = adapter_training(Path(adapter))
    n_full = len(prepared.split.test)
    scored = record["counts"]["users"]
    record["label"] = row.label + ("" if scored == n_full else f" [{scored} of {n_full} users]")
    record["row"] = row.key
    record["stage1_digest"] = weights_digest(stage1)
    record["wall_s"] = time.perf_counter() - start
    model.close()
    # a subset run does not overwrite the full run of the same row (e.g. the LSTM on all users and on the first 64)
    path = out_dir / protocol / (f"{row.key}@{scored}.json" if scored != n_full else f"{row.key}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    stages = {k[6:-11]: v for k, v in record["timings"].items() if k.startswith("stage_")}
    print(f"{protocol}/{row.key}: " + ", ".join(f"{c}={record['metrics'].get(c, float('nan')):.4f}"
                                                for c in COLUMNS) + f"; {record['timings']['s_per_user']:.3f} s/user"
          + (f"; per stage s/user: {', '.join(f'{k}={v:.4f}' for k, v in stages.items())}" if stages else ""),
          flush=True)
    return record


def adapter_training(adapter: Path) -> dict:
    """``finetune.json`` (config, steps, per-step losses, timings) and ``examples.json`` (what the examples were drawn
    from, and how many were dropped) of an adapter folder, as far as they exist."""
    out = {}
    for name in ("finetune", "examples"):
        path = adapter / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def weights_digest(folder: str | Path) -> str:
    """sha256 (16 hex) of a model folder's safetensors files: which Stage-1 weights a row used. A seeded run
    retrained on another CPU gives other weights (the float kernels differ), and rows are comparable only on the
    same Stage 1."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def stage1_ranks(model, result, max_k: int):
    """First-hit ranks (within ``max_k``, as ``result.ranks``) of the hybrid's own Stage-1 ranking on the cases
    ``result`` scored."""
    return first_hit_ranks(model.stage1.recommend(result.cases.histories, max_k).items, result.cases.targets, max_k)


def answered_vs_stage1(model, result, ks, stage1=None) -> dict | None:
    """The LLM's own contribution: metrics over the users whose list came from the LLM (no fallback), next to the
    Stage-1 model's ranking of the same users (``stage1``: its first-hit ranks on every case, computed here when not
    given). The whole-row metrics mix both, since a fallback user gets Stage 1's list; this separates them."""
    extras = result.recommendations.extras
    if not extras or not isinstance(model, Hybrid) or model.stage1 is None:
        return None
    idx = np.flatnonzero([e.get("answered", not e.get("fallback", False)) for e in extras])
    if not len(idx):
        return {"users": 0}
    if stage1 is None:
        stage1 = stage1_ranks(model, result, max(ks))
    return {"users": int(len(idx)), "llm": ranking_metrics(result.ranks[idx], ks),
            "stage1": ranking_metrics(stage1[idx], ks)}



def run_rows(protocol: str, stage1: str, adapter: str | None = None, rows: set[str] | None = None,
             max_users: dict[str, int] | None = None, data: dict | None = None, out_dir: Path = Path("results"),
             llm_overrides: tuple[str, ...] = ()) -> list[dict]:
    """Run the rows of ``protocol`` (all, or the keys in ``rows``); a row needing an adapter is skipped without one,
    and says so."""
    records, cache, max_users = [], {}, max_users or {}
    for row in ROWS:
        if protocol not in row.protocols or (rows is not None and row.key not in rows):
            continue
        if row.adapter and not adapter:
            print(f"skip {row.key}: no --adapter")
            continue
        records.append(run_row(row, protocol, stage1, adapter, data or {}, max_users.get(row.key), out_dir, cache,
                               llm_overrides))
    return records
