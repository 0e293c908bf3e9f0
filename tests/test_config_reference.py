"""docs/configuration.md is generated from the typed configs and must match them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dualrec.config import DataConfig
from dualrec.config_reference import field_comments, markdown
from dualrec.models import MODELS, get_model_class
from dualrec.models.fusion import FusionConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_field_comments_come_from_the_source_and_continue_on_aligned_lines():
    data = field_comments(DataConfig)
    assert data["top_items"] == "DUALRec keeps the 1,000 most-rated movies"
    assert data["top_items_from"].startswith("all (the DUALRec paper)") and data["top_items_from"].endswith(
        "all for strict and paper")
    assert field_comments(FusionConfig)["n_candidates"] == "K: Stage-1 candidates the signals score"


def test_configuration_page_is_up_to_date_and_lists_every_key():
    page = markdown()
    assert DOC.read_text() == page, "regenerate: python -m dualrec.config_reference > docs/configuration.md"
    for name in MODELS:
        for f in dataclasses.fields(get_model_class(name).config_class):
            assert f"| `model.{f.name}` |" in page
    assert "| `data.top_items` | `1000` |" in page and "| `model.epochs` | `10` |" in page
