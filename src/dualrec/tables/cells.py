"""Cells the generated tables share: a paired-bootstrap difference with its interval, and a record label's
sample suffix."""

from __future__ import annotations


def delta_cell(ci: dict, metric: str) -> str:
    """``+d [lo, hi]`` of a paired-bootstrap record, marked ``**(> 0)**`` / ``(< 0)`` when the interval excludes 0."""
    lo, hi = ci[f"delta_{metric}"]
    mark = " **(> 0)**" if lo > 0 else " (< 0)" if hi < 0 else ""
    return f"{ci['delta'][metric]:+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}"


def sample_suffix(label: str) -> str:
    """The ``" [N of M users]"`` a sampled row's label ends with, or ``""``: kept when a row is relabelled."""
    return label[label.index(" ["):] if " [" in label else ""
