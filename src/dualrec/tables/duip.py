"""DUIP's tables: docs/results.md's section ``duip`` (rows, intervals against Stage 1, learning curves) and the
verdict paragraph of docs/duip.md, rendered from the records :mod:`dualrec.duip_rows` writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dualrec.duip_rows import BASELINES, COLUMNS, PROTOCOLS, duip_label
from dualrec.evaluation.report import BEYOND_COLUMNS, markdown_table
from dualrec.tables.cells import delta_cell, sample_suffix


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
    return duip_label(r["config"]["model"], r["learning_curve"], windows) + sample_suffix(r["label"])


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
        if any(c in r["metrics"] for r in recs for c in BEYOND_COLUMNS):
            parts += ["Beyond accuracy, the same rows (docs/protocols.md):\n", markdown_table(recs, BEYOND_COLUMNS)]
        lines = []
        for r in recs:
            if "ci" not in r:
                continue
            cells = " | ".join(delta_cell(r["ci"], m) for m in ("HR@1", "NDCG@10"))
            lines.append(f"| {r['label']} | {r['ci']['n_users']:,} | {cells} |")
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
