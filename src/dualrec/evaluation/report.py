"""Human-readable reports of result records: Markdown tables and bar charts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

BEYOND_COLUMNS = ("catalog_coverage@10", "gini@10", "ild_genre@10", "ild_title@10", "novelty@10", "tail_share@10")
METRIC_COLUMNS = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR@20", "genre_jaccard", "hallucination_rate",
                  *BEYOND_COLUMNS)


def markdown_table(records: Sequence[dict], columns: Sequence[str] = METRIC_COLUMNS) -> str:
    """One row per result record; metrics a record lacks print as '-'. Protocols are labelled in the header."""
    columns = [c for c in columns if any(c in r["metrics"] for r in records)]
    protocols = sorted({r["protocol"] for r in records})
    lines = [f"Protocol: {', '.join(protocols)}. Data: "
             + ", ".join(sorted({f"{r['data']['name']} ({r['data']['fingerprint']})" for r in records})), "",
             "| model | users | " + " | ".join(columns) + " | s/user |",
             "|---|---:|" + "---:|" * len(columns) + "---:|"]
    for r in records:
        label = r.get("label") or r["model"]
        cells = [f"{r['metrics'][c]:.4f}" if c in r["metrics"] else "-" for c in columns]
        lines.append(f"| {label} | {r['counts']['users']} | " + " | ".join(cells)
                     + f" | {r['timings']['s_per_user']:.4f} |")
    return "\n".join(lines) + "\n"


def bar_chart(records: Sequence[dict], path: str | Path, metrics: Sequence[str] = ("HR@5", "HR@10", "NDCG@10")) -> Path:
    """Grouped bars of ``metrics`` per model, saved as PNG."""
    labels = [r.get("label") or r["model"] for r in records]
    x = np.arange(len(labels))
    width = 0.8 / len(metrics)
    fig = Figure(figsize=(max(6, len(labels) * 0.9), 4))
    ax = fig.subplots()
    for j, m in enumerate(metrics):
        ax.bar(x + j * width, [r["metrics"].get(m, 0.0) for r in records], width, label=m)
    ax.set_xticks(x + width * (len(metrics) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_title(f"protocol: {', '.join(sorted({r['protocol'] for r in records}))}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
