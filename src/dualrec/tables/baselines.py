"""The paper's comparison table in docs/results.md (section ``baselines``): the records of the models listed in
configs/paper-table.yaml, rendered by :func:`dualrec.benchmark.render_records`."""

from __future__ import annotations

from pathlib import Path

from dualrec.benchmark import BenchmarkConfig, render_records

CONFIG = Path("configs") / "paper-table.yaml"


def render(root: Path) -> dict[str, str]:
    """``{protocol: table}`` from the records under ``root`` (the results folder next to configs/)."""
    return render_records(BenchmarkConfig.load(root.parent / CONFIG), root)
