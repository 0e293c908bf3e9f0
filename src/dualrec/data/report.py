"""Counting what a loader kept and what it skipped, so nothing is dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input that cannot be skipped: the message names the file and line (or user, or item)."""


@dataclass
class LoadReport:
    """What one loader read: lines kept, lines skipped per reason, and the first few examples of each.

    Loaders take ``errors="skip"`` (count and go on) or ``errors="raise"`` (stop at the first bad line with a
    :class:`DataError` naming file and line). Either way the caller can print :meth:`summary`.
    """

    source: str
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 3

    def skip(self, reason: str, where: str, errors: str = "skip", count: int = 1) -> None:
        """Record ``count`` skipped rows for ``reason``; ``where`` is e.g. ``"ratings.dat:17: 1::x::5::9"``."""
        if errors == "raise":
            raise DataError(f"{where}: {reason}")
        self.skipped[reason] += count
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < self.max_examples:
            bucket.append(where)

    def note(self, what: str, count: int = 1) -> None:
        """Count something that is not an error but a user should know (e.g. Latin-1 lines decoded)."""
        self.notes[what] += count

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "examples": self.examples,
        }

    def summary(self) -> str:
        lines = [f"{self.source}: read {self.read:,}, kept {self.kept:,}, skipped {self.n_skipped:,}"]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {n:,} ({reason}), e.g. {self.examples.get(reason, [''])[0]}")
        for what, n in sorted(self.notes.items()):
            lines.append(f"  note: {n:,} {what}")
        return "\n".join(lines)
