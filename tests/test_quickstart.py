"""The main job end to end on a tiny setting: real MovieLens rows, the real embedded LLM and SBERT, the same code
path as `scripts/main.sh`, and what it leaves in the run folder."""

from __future__ import annotations

import pytest

import base64
import html
import json
import re

import numpy as np

from dualrec.evaluation.metrics import MISS
from dualrec.evaluation.protocols import EvalCases
from dualrec.models import Recommender
from dualrec.quickstart import QuickstartConfig, example_text, hit_rate_curve, run_quickstart, sample_cases, text_table


def test_sample_cases_is_seeded_ordered_and_whole_when_small():
    cases = EvalCases(np.arange(10), [np.array([i]) for i in range(10)], [np.array([i + 100]) for i in range(10)])
    a, b = sample_cases(cases, 4, 7), sample_cases(cases, 4, 7)
    assert a.users.tolist() == b.users.tolist() and len(a) == 4 and np.all(np.diff(a.users) > 0)
    assert [int(t[0]) for t in a.targets] == [int(u) + 100 for u in a.users]   # rows stay together
    assert sample_cases(cases, 50, 7) is cases and sample_cases(cases, None, 7) is cases


def test_hit_rate_curve_counts_first_hits_at_each_k():
    assert hit_rate_curve(np.array([0, 2, 2, MISS]), 3) == [0.25, 0.25, 0.75]


def test_quickstart_runs_the_pipeline_and_writes_a_self_contained_report(ml1m_small, tmp_path):
    cfg = QuickstartConfig(epochs=1, max_windows=300, valid_users=20, test_users=20, progress=False)
    summary = run_quickstart(cfg, tmp_path, dataset=ml1m_small)

    labels = [r["label"] for r in summary["rows"]]
    assert labels == ["MostPop", "Stage 1 (LSTM)", "DUALRec: Stage 1 + LLM ranker + SBERT"]
    assert all(r["counts"]["users"] == 20 and r["protocol"] == "strict" for r in summary["rows"])
    fused = summary["rows"][-1]
    assert fused["metrics"]["coverage"] == 1.0 and fused["counts"]["llm_answered"] == 20
    assert abs(sum(fused["weights"].values()) - 1.0) < 1e-9 and set(fused["weights"]) == {"stage1", "llm", "sbert"}
    for r in summary["rows"]:
        curve = r["hit_rate_curve"]
        assert len(curve) == 20 and curve == sorted(curve) and curve[9] == r["metrics"]["HR@10"]
    assert summary["bootstrap"]["n_users"] == 20 and summary["sample"]["valid_users"] == 20

    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["rows"]] == labels and saved["rows"][-1]["metrics"]["coverage"] == 1.0
    assert Recommender.load(tmp_path / "lstm" / "model").name == "lstm"      # an ordinary run folder
    assert (tmp_path / "lstm" / "experiment.yaml").exists() and (tmp_path / "fusion" / "model").is_dir()

    page = (tmp_path / "report.html").read_text()
    assert "<table" in page and all(label in page for label in labels) and html.escape(summary["caption"]) in page
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 2 and all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not re.search(r"(src|href)=['\"]?https?:", page)                  # nothing fetched at view time

    example = summary["example"]
    assert list(example["lists"]) == labels and all(len(v) == 10 for v in example["lists"].values())
    gen = example["generate"]
    assert isinstance(gen["answer"], str) and gen["answer"]
    table, shown = text_table(summary), example_text(example)
    assert table.startswith("20 of 600 test cases") and "strict protocol" in table and labels[-1] in table
    assert "LLM answer" in shown and example["target"][0]["title"] in shown


@pytest.mark.integration
def test_quickstart_command_prints_the_table_with_the_llm_row_and_the_report_path(tmp_path):
    from typer.testing import CliRunner

    from conftest import ML1M_RATINGS, SHARED_DATA
    from dualrec.cli import app

    out = tmp_path / "main"
    result = CliRunner().invoke(app, ["quickstart", "--data-dir", str(SHARED_DATA), "--ratings", str(ML1M_RATINGS),
                                      "--epochs", "1", "--max-windows", "300", "--test-users", "10",
                                      "--valid-users", "10", "--no-generate-example", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("10 of 2999 test cases") for line in lines)
    fused = next(line for line in lines if line.startswith("DUALRec: Stage 1 + LLM ranker + SBERT "))
    assert fused.split()[-2] == "1.0000"                                    # the coverage column
    assert f"full report: {out / 'report.html'}" in result.output and (out / "report.html").exists()
    assert "LLM answer" not in result.output                                # --no-generate-example
    assert json.loads((out / "results.json").read_text())["sample"]["test_users"] == 10
