"""DUIP's table rows: MostPop, its Stage-1 LSTM and DUIP runs of one protocol, each scored into a record.

    dualrec table duip --protocol chrono --stage1 runs/lstm-all-chrono \
        --duip duip=runs/duip-chrono --duip duip-ablation-cold=runs/duip-chrono-cold \
        --max-users duip-ablation-cold=2000 --data-dir ../shared/data \
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat
    dualrec table render --section duip --section duip-verdict    # docs/results.md and docs/duip.md, from records

Every row is scored by the one evaluator on the protocol's test cases (all of them unless ``--max-users``, which
the label then states); its record (metrics, per-case first-hit ranks, config, commit, data fingerprint, a DUIP
run's learning curve, and the paired-bootstrap interval against the Stage-1 LSTM on the same cases) goes to
``results/<protocol>/<row>.json``. Under ``chrono`` a user has several test cases: ``per_user`` then lists one entry
per case, with the case's index, and the bootstrap resamples cases.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dualrec import experiment as ex
from dualrec.evaluation.bootstrap import paired_bootstrap
from dualrec.evaluation.evaluator import evaluate
from dualrec.models import build_model
from dualrec.rows import weights_digest
from dualrec.utils import source_commit
from dualrec.models.duip import DUIPConfig

PROTOCOLS = ("chrono", "strict")
COLUMNS = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@1", "NDCG@5", "NDCG@10", "NDCG@20")
SECTION = "duip"
BASELINES = ("duip-mostpop", "duip-stage1")


def duip_label(model_section: dict, history: list[dict], windows: int) -> str:
    """What a DUIP run is, from its config's model section and training history: start, LM and its mode, prompt,
    budget."""
    c = DUIPConfig.from_dict({k: v for k, v in model_section.items() if k != "name"}).to_dict()
    lm = "Gemma 3 270M" if c["lm"] == "embedded" else c["lm"]
    if c.get("lm_layers"):
        lm += f" (first {c['lm_layers']} blocks)"
    lm += f", {c['lm_mode']}" + (f" r={c['lora_r']}" if c["lm_mode"] == "lora" else "")
    soft = f"{c['soft_tokens']} soft tokens" if c["soft_tokens"] else "no soft prompt"
    if c["init"] == "residual":
        start = "residual on Stage 1" + (" (LSTM tuned too)" if c["train_encoder"] else "") + (
            f" + branch loss x{c['branch_loss_weight']:g}" if c["branch_loss_weight"] else "")
    else:
        start = "cold start" + (" from a trained LSTM" if c["lstm_run"] else "")
    trained = sum(round(h["rows_per_s"] * h["seconds"]) for h in history)
    return (f"DUIP, {start}, {lm}, {soft}, {c['prompt_items']} title(s); {trained:,} of {windows:,} "
            f"training windows, lr {c['lr']:g}")


def record_text(record: dict) -> str:
    """The record as JSON, one field a line, with the long per-case lists of ``per_user`` on one line each (a
    chrono record has 33,012 cases: one number a line would be 100,000 lines)."""
    head = json.dumps({k: v for k, v in record.items() if k != "per_user"}, indent=1, default=str)
    if "per_user" not in record:
        return head
    lists = ",\n".join(f'  {json.dumps(k)}: {json.dumps(v, separators=(",", ":"))}'
                        for k, v in record["per_user"].items())
    return head[:-2] + ',\n "per_user": {\n' + lists + "\n }\n}"


def score_row(key: str, label: str, model, cfg, prepared, cases, stage1_ranks: np.ndarray | None,
              n_full: int, out_dir: Path, extra: dict | None = None) -> dict:
    """Evaluate one model on ``cases``, write its record, return it."""
    start = time.perf_counter()
    result = evaluate(model, cases, prepared.dataset.catalog, cfg.evaluation.ks, cfg.evaluation.batch_size,
                      stats=ex.item_stats(cfg, prepared))
    record = ex.result_record(cfg, model, prepared, result)
    record["per_user"] = {"users": cases.users.tolist(), "cases": np.arange(len(cases)).tolist(),
                          "ranks": result.ranks.tolist()}
    if stage1_ranks is not None:
        record["ci"] = paired_bootstrap(result.ranks, stage1_ranks, ("NDCG@10", "HR@10", "HR@1"), seed=cfg.seed)
    scored = len(cases)
    record["label"] = label + ("" if scored == n_full else f" [{scored:,} of {n_full:,} test cases]")
    record["row"] = key
    record["wall_s"] = time.perf_counter() - start
    record.update(extra or {})
    path = out_dir / cfg.evaluation.protocol / (f"{key}@{scored}.json" if scored != n_full else f"{key}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_text(record))
    print(f"{path}: " + ", ".join(f"{m}={record['metrics'][m]:.4f}" for m in ("HR@1", "HR@10", "NDCG@10"))
          + (f"; vs Stage 1 NDCG@10 {record['ci']['delta']['NDCG@10']:+.4f} {record['ci']['delta_NDCG@10']}"
             if "ci" in record else ""), flush=True)
    return record


def run_table(protocol: str, stage1_run: Path, duip_runs: dict[str, Path], max_users: dict[str, int],
              data_dir: str | None, ratings: str | None, out_dir: Path) -> None:
    """MostPop and the Stage-1 LSTM on every test case, then each DUIP run (on its ``max_users`` cases if given)
    with its interval against the Stage-1 LSTM on the same cases."""
    cfg, stage1 = ex.load_run(stage1_run, data_dir, ratings)
    if cfg.evaluation.protocol != protocol:
        raise ValueError(f"{stage1_run} was trained under {cfg.evaluation.protocol!r}, not {protocol!r}")
    cfg.evaluation.max_users = None
    prepared = ex.prepare(cfg)
    test = prepared.split.test
    n_full = len(test)
    commit = {"commit": source_commit() or "unknown"}   # once, before scoring: the code that runs now
    digest = {**commit, "stage1_run": str(stage1_run), "stage1_digest": weights_digest(stage1_run / "model")}
    base = score_row("duip-stage1", f"Stage-1 LSTM ({stage1.config.targets} targets)", stage1, cfg, prepared,
                     test, None, n_full, out_dir, {**digest, "learning_curve": stage1.history})
    mostpop = build_model("mostpop").fit(prepared.split.train, prepared.dataset.catalog)
    score_row("duip-mostpop", "MostPop", mostpop, cfg, prepared, test, np.asarray(base["per_user"]["ranks"]),
              n_full, out_dir, commit)
    for key, run in duip_runs.items():
        run_cfg, model = ex.load_run(run, data_dir, ratings)
        if run_cfg.evaluation.protocol != protocol:
            raise ValueError(f"{run} was trained under {run_cfg.evaluation.protocol!r}, not {protocol!r}")
        lstm_run = model.config.lstm_run
        if model.config.init == "residual" and lstm_run and Path(lstm_run).resolve() != (stage1_run / "model").resolve():
            print(f"note: {run} starts from {lstm_run}, not from the table's Stage 1 {stage1_run}/model")
        cases = test.head(max_users[key]) if key in max_users else test
        base_ranks = np.asarray(base["per_user"]["ranks"][:len(cases)])
        windows = len(model.training_windows(prepared.split.train)[1]) if model.config.max_windows is None else \
            model.config.max_windows
        label = duip_label(run_cfg.model, model.history, windows)
        score_row(key, label, model, run_cfg, prepared, cases, base_ranks, n_full, out_dir,
                  {**digest, "run": str(run), "learning_curve": model.history, "training_windows": windows,
                   "gate": model.net.gate.item() if model.config.init == "residual" else None})
        model.close()
