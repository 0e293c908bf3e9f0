"""The DUIP results table rendered from records: intervals marked when they exclude 0, labels re-derived from each
run's config, the learning curve, and the verdict paragraph of docs/duip.md."""

from __future__ import annotations

import json

import numpy as np

from dualrec.duip_rows import record_text
from dualrec.tables.duip import current_label, render, verdict
from dualrec.evaluation.bootstrap import paired_bootstrap

CURVE = [{"epoch": 1, "train_loss": 4.6, "val_loss": 5.1, "val_top1": 0.02, "val_ndcg10": 0.16, "rows_per_s": 20.0,
          "seconds": 51.2},
         {"epoch": 2, "train_loss": 4.5, "val_loss": 5.0, "val_top1": 0.03, "val_ndcg10": 0.17, "rows_per_s": 25.6,
          "seconds": 40.0}]


def _record(row: str, ranks: np.ndarray, base: np.ndarray | None, **extra) -> dict:
    hr1 = float((ranks == 0).mean())
    return {"row": row, "label": extra.pop("label", row), "protocol": "chrono", "protocol_note": "time cut",
            "model": row, "data": {"name": "ml-1m", "fingerprint": "f"}, "counts": {"users": len(ranks)},
            "timings": {"s_per_user": 0.01}, "metrics": {"HR@1": hr1, "NDCG@10": hr1, **extra.pop("beyond", {})},
            "ci": paired_bootstrap(ranks, base, ("NDCG@10", "HR@10", "HR@1"), seed=42) if base is not None else None,
            "commit": "abc", **extra}


def test_rows_intervals_labels_curve_and_verdict(tmp_path):
    rng = np.random.default_rng(0)
    stage1 = rng.integers(-1, 20, 400)
    mostpop = np.where(rng.random(400) < 0.8, -1, stage1)            # misses most of what Stage 1 finds
    model = {"name": "duip", "init": "residual", "lm_layers": 6, "lm_mode": "frozen", "prompt_items": 1,
             "train_encoder": False, "branch_loss_weight": 1.0, "lr": 0.003}
    recs = {"duip-stage1": _record("duip-stage1", stage1, None, label="Stage-1 LSTM",
                                   beyond={"catalog_coverage@10": 0.25}),
            "duip-mostpop": _record("duip-mostpop", mostpop, stage1, label="MostPop"),
            "duip": _record("duip", stage1.copy(), stage1, label="old label; 1 of 9,000 training windows",
                            config={"model": model}, learning_curve=CURVE, gate=0.01)}
    (tmp_path / "chrono").mkdir()
    for key, r in recs.items():
        r.pop("ci") if r["ci"] is None else None
        (tmp_path / "chrono" / f"{key}.json").write_text(json.dumps(r))
    label = ("DUIP, residual on Stage 1 + branch loss x1, Gemma 3 270M (first 6 blocks), frozen, 4 soft tokens, "
             "1 title(s); 2,048 of 9,000 training windows, lr 0.003")
    assert current_label(recs["duip"]) == label          # from its config and curve (1,024 + 1,024 windows)
    text = render(tmp_path)["chrono"]
    lines = text.splitlines()
    rows = [ln.split(" | ")[0] for ln in lines if ln.startswith("| ") and " | 400 | " in ln]
    assert rows[:3] == ["| MostPop", "| Stage-1 LSTM", "| " + label]      # the metrics table, baselines first
    assert rows[3:6] == rows[:3]                                           # beyond accuracy, the same rows
    assert "| Stage-1 LSTM | 400 | 0.2500 | 0.0100 |" in lines and "| MostPop | 400 | - | 0.0100 |" in lines
    assert rows[6:] == ["| MostPop", "| " + label]                         # the intervals against Stage 1
    mostpop_ci = next(ln for ln in lines if ln.startswith("| MostPop | 400 |") and "[" in ln)
    assert mostpop_ci.count("(< 0)") == 2                 # both intervals exclude 0, below
    duip_ci = next(ln for ln in lines if ln.startswith(f"| {label} | 400 |") and "[" in ln)
    assert "+0.0000 [+0.0000, +0.0000]" in duip_ci and "(" not in duip_ci.split(" | ", 2)[2]
    assert "| 2 | 2,048 | 4.500 | 5.000 | 0.0300 | 0.1700 | 25.60 |" in text
    said = verdict(tmp_path)["chrono"]
    assert said.startswith(f"`chrono`, 400 test cases: {label}: HR@1 ")
    assert "no difference shown" in said and "0.0100" in said


def test_record_text_reads_back_the_same_and_keeps_per_case_lists_on_one_line():
    ranks = list(range(-1, 5000))
    record = {"row": "duip", "metrics": {"HR@1": 0.5}, "per_user": {"users": ranks, "cases": ranks, "ranks": ranks}}
    text = record_text(record)
    assert json.loads(text) == record
    assert len(text.splitlines()) == 11     # {, row, metrics {, HR@1, }, per_user {, 3 lists, }, }
