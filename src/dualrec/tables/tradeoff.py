"""The accuracy-diversity trade-off table of docs/results.md, rendered from each protocol's ``tradeoff.json``."""

from __future__ import annotations

import json
from pathlib import Path

from dualrec.tradeoff import markdown


def render(root: Path) -> dict[str, str]:
    """``{protocol: Markdown}`` for every ``<root>/<protocol>/tradeoff.json``."""
    return {path.parent.name: markdown(json.loads(path.read_text())) for path in sorted(root.glob("*/tradeoff.json"))}
