"""The Stage-1 table of docs/results.md: every committed record of the LSTM (and of MostPop, the floor), wherever a
table run or ``dualrec evaluate`` put it under results/, with its path, so each figure names its record."""

from __future__ import annotations

import json
from pathlib import Path

from dualrec.tables.cells import sample_suffix

MODELS = ("lstm", "mostpop")
COLUMNS = ("HR@1", "HR@5", "HR@10", "NDCG@10", "MRR@20")


def label(record: dict) -> str:
    """The Stage 1 of a DUALRec or ranker table is named by its weights (the digest its table's rows share); a
    record with a label of its own keeps it; one written by ``dualrec evaluate`` is named by its recipe."""
    if record.get("row") == "lstm":
        return f"the Stage 1 of that folder's table rows (weights {record.get('stage1_digest', 'not recorded')})" \
            + sample_suffix(record["label"])
    if record.get("label"):
        return record["label"]
    if record["model"] != "lstm":
        return record["model"]
    model = record["config"]["model"]
    return f"LSTM, targets: {model.get('targets', 'last')}, at most {model.get('epochs')} epochs" + (
        f", patience {model['patience']}" if model.get("patience") else "")


def render(root: Path) -> dict[str, str]:
    """``{protocol: Markdown}`` over the records under ``root`` (recursively) whose model is in :data:`MODELS`."""
    rows: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.json")):
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or record.get("model") not in MODELS or "metrics" not in record:
            continue
        m = record["metrics"]
        rows.setdefault(record["protocol"], []).append(
            f"| `{path.relative_to(root.parent).as_posix()}` | {label(record)} | {record['counts']['users']} | "
            + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in COLUMNS) + " |")
    head = "| record | model | users | " + " | ".join(COLUMNS) + " |\n|---|---|---:|" + "---:|" * len(COLUMNS) + "\n"
    return {p: head + "\n".join(lines) + "\n" for p, lines in sorted(rows.items())}
