"""DUIP's results table (docs/results.md, section duip): MostPop, its Stage-1 LSTM and DUIP runs, one protocol.

    python -m dualrec.duip_table --protocol chrono --stage1 runs/lstm-all-chrono \
        --duip duip=runs/duip-chrono --duip duip-ablation-cold=runs/duip-chrono-cold \
        --max-users duip-ablation-cold=2000 --data-dir ../shared/data \
        --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --docs
    python -m dualrec.duip_table --render-only --docs      # re-render docs/results.md from the records

Every row is scored by the one evaluator on the protocol's test cases (all of them unless ``--max-users``, which
the label then states); its record (metrics, per-case first-hit ranks, config, commit, data fingerprint, a DUIP
run's learning curve, and the paired-bootstrap interval against the Stage-1 LSTM on the same cases) goes to
``results/<protocol>/<row>.json``. Under ``chrono`` a user has several test cases: ``per_user`` then lists one entry
per case, with the case's index, and the bootstrap resamples cases.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from dualrec import experiment as ex
from dualrec.evaluation.bootstrap import paired_bootstrap
from dualrec.evaluation.report import markdown_table
from dualrec.llm.table import docs_block, weights_digest, write_docs
from dualrec.models import build_model
from dualrec.models.duip import DUIPConfig

PROTOCOLS = ("chrono", "strict")
COLUMNS = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@1", "NDCG@5", "NDCG@10", "NDCG@20")
SECTION = "duip"
BASELINES = ("duip-mostpop", "duip-stage1")


def commit() -> str:
    """The source tree's git commit (with ``+dirty`` when src/ or configs/ have uncommitted changes), or
    ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "configs"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


COMMIT = commit()   # once, at import: the code that runs is the code imported now, whatever is committed meanwhile


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
    from dualrec.evaluation.evaluator import evaluate

    start = time.perf_counter()
    result = evaluate(model, cases, prepared.dataset.catalog, cfg.evaluation.ks, cfg.evaluation.batch_size)
    record = ex.result_record(cfg, model, prepared, result)
    record["per_user"] = {"users": cases.users.tolist(), "cases": np.arange(len(cases)).tolist(),
                          "ranks": result.ranks.tolist()}
    if stage1_ranks is not None:
        record["ci"] = paired_bootstrap(result.ranks, stage1_ranks, ("NDCG@10", "HR@10", "HR@1"), seed=cfg.seed)
    scored = len(cases)
    record["label"] = label + ("" if scored == n_full else f" [{scored:,} of {n_full:,} test cases]")
    record["row"] = key
    record["commit"] = COMMIT
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
    digest = {"stage1_run": str(stage1_run), "stage1_digest": weights_digest(stage1_run / "model")}
    base = score_row("duip-stage1", f"Stage-1 LSTM ({stage1.config.targets} targets)", stage1, cfg, prepared,
                     test, None, n_full, out_dir, {**digest, "learning_curve": stage1.history})
    mostpop = build_model("mostpop").fit(prepared.split.train, prepared.dataset.catalog)
    score_row("duip-mostpop", "MostPop", mostpop, cfg, prepared, test, np.asarray(base["per_user"]["ranks"]),
              n_full, out_dir)
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


def curve_table(record: dict) -> str:
    """A DUIP run's validation curve: one line per epoch (or ``epoch_rows`` slice) of training."""
    rows = record.get("learning_curve") or []
    if not rows:
        return ""
    done = 0
    lines = []
    for h in rows:
        done += round(h["rows_per_s"] * h["seconds"])
        lines.append(f"| {h['epoch']} | {done:,} | {h['train_loss']:.3f} | {h.get('val_loss', float('nan')):.3f} | "
                     f"{h.get('val_top1', float('nan')):.4f} | {h.get('val_ndcg10', float('nan')):.4f} | "
                     f"{h['rows_per_s']:.2f} |")
    return (f"\nLearning curve of {record['label']} (validation windows: HR@1 = top-1 accuracy, NDCG@10 with the "
            "history excluded):\n\n| epoch | windows seen | train loss | val loss | val HR@1 | val NDCG@10 | "
            "windows/s |\n|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n")


def current_label(record: dict) -> str:
    """A DUIP row's label re-derived from its own config and curve (records written before a relabelling too);
    a baseline's as recorded."""
    r = record
    if r["row"] in BASELINES:
        return r["label"]
    windows = r.get("training_windows") or int(re.search(r"of ([\d,]+) training windows",
                                                         r["label"]).group(1).replace(",", ""))
    sample = r["label"][r["label"].index(" ["):] if " [" in r["label"] else ""
    return duip_label(r["config"]["model"], r["learning_curve"], windows) + sample


def render(out_dir: Path) -> dict[str, str]:
    """``{protocol: Markdown}``: the rows, their intervals against Stage 1, and each DUIP run's learning curve."""
    blocks = {}
    for protocol in PROTOCOLS:
        recs = [json.loads(p.read_text()) for p in sorted((out_dir / protocol).glob("duip*.json"))]
        recs = sorted([r for r in recs if r.get("row", "").startswith("duip")],
                      key=lambda r: ({"duip-mostpop": 0, "duip-stage1": 1}.get(r["row"], 2), r["row"]))
        if not recs:
            continue
        for r in recs:
            r["label"] = current_label(r)
        parts = [f"**Protocol `{protocol}`** ({recs[0]['protocol_note']}).\n", markdown_table(recs, COLUMNS)]
        lines = []
        for r in recs:
            if "ci" not in r:
                continue
            ci = r["ci"]
            cells = []
            for m in ("HR@1", "NDCG@10"):
                lo, hi = ci[f"delta_{m}"]
                mark = " **(> 0)**" if lo > 0 else " (< 0)" if hi < 0 else ""
                cells.append(f"{ci['delta'][m]:+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}")
            lines.append(f"| {r['label']} | {ci['n_users']:,} | " + " | ".join(cells) + " |")
        parts.append("\nAgainst the Stage-1 LSTM on the same cases: the difference and its paired-bootstrap 95 % "
                     "interval (1,000 resamples of the cases; **(> 0)** / (< 0): the interval excludes 0):\n\n"
                     "| row | cases | delta HR@1 [95 % CI] | delta NDCG@10 [95 % CI] |\n|---|---:|---|---|\n"
                     + "\n".join(lines) + "\n")
        parts += [t for t in (curve_table(r) for r in recs if r["row"] not in BASELINES) if t]
        commits = sorted({r.get("commit", "unknown") for r in recs})
        parts.append(f"\nRecords: `results/{protocol}/duip*.json` (commit {', '.join(commits)}).\n")
        blocks[protocol] = "\n".join(parts)
    return blocks


def verdict(out_dir: Path) -> dict[str, str]:
    """``{protocol: one paragraph}`` for docs/duip.md: the ``duip`` row against Stage 1 and MostPop, with the
    interval and what it shows."""
    blocks = {}
    for protocol in PROTOCOLS:
        paths = {k: out_dir / protocol / f"{k}.json" for k in ("duip", "duip-stage1", "duip-mostpop")}
        if not all(p.exists() for p in paths.values()):
            continue
        r = {k: json.loads(p.read_text()) for k, p in paths.items()}
        ci = r["duip"]["ci"]
        said = []
        for m in ("HR@1", "NDCG@10"):
            lo, hi = ci[f"delta_{m}"]
            shown = "higher" if lo > 0 else "lower" if hi < 0 else "no difference shown"
            said.append(f"{m} {ci['delta'][m]:+.4f} [{lo:+.4f}, {hi:+.4f}] ({shown})")
        metrics = {k: v["metrics"] for k, v in r.items()}
        blocks[protocol] = (
            f"`{protocol}`, {r['duip']['counts']['users']:,} test cases: {current_label(r['duip'])}: HR@1 "
            f"{metrics['duip']['HR@1']:.4f}, NDCG@10 {metrics['duip']['NDCG@10']:.4f}; Stage 1 "
            f"{metrics['duip-stage1']['HR@1']:.4f} / {metrics['duip-stage1']['NDCG@10']:.4f}; MostPop "
            f"{metrics['duip-mostpop']['HR@1']:.4f} / {metrics['duip-mostpop']['NDCG@10']:.4f}. DUIP minus Stage 1 "
            f"(paired bootstrap, 95 %): {'; '.join(said)}. Gate (weight of the LM's logits) after training: "
            f"{r['duip'].get('gate', float('nan')):.4f}.\n")
    return blocks


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=PROTOCOLS)
    ap.add_argument("--stage1", type=Path, help="the Stage-1 LSTM run folder (runs/<x>) of this protocol")
    ap.add_argument("--duip", action="append", default=[], metavar="KEY=RUN", help="a DUIP run folder and its row")
    ap.add_argument("--max-users", action="append", default=[], metavar="KEY=N",
                    help="score that row on the first N test cases only (its label says so)")
    ap.add_argument("--data-dir")
    ap.add_argument("--ratings")
    ap.add_argument("--out", type=Path, default=Path("results"))
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--docs", action="store_true", help="write the tables into docs/results.md (section duip)")
    args = ap.parse_args(argv)
    if not args.render_only:
        if not args.protocol or not args.stage1:
            ap.error("--protocol and --stage1 are needed (or --render-only)")
        duip = {k: Path(v) for k, v in (s.split("=", 1) for s in args.duip)}
        caps = {k: int(v) for k, v in (s.split("=", 1) for s in args.max_users)}
        unknown = set(caps) - set(duip)
        if unknown:
            ap.error(f"--max-users names rows that are not given with --duip: {sorted(unknown)}")
        run_table(args.protocol, args.stage1, duip, caps, args.data_dir, args.ratings, args.out)
    blocks = render(args.out)
    if args.docs:
        write_docs(blocks, section=SECTION)
        write_docs(verdict(args.out), Path("docs/duip.md"), section="duip-verdict")
    for protocol, text in blocks.items():
        print(docs_block(protocol, text, SECTION))


if __name__ == "__main__":
    main()
