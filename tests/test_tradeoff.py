"""`dualrec tradeoff` and `dualrec evaluate --record` end to end on the real ML-1M copy, with two cheap models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualrec.cli import app
from dualrec.tables import tradeoff as tradeoff_tables
from conftest import ML1M_RATINGS, SHARED_DATA

DATA = ["--data-dir", str(SHARED_DATA), "--ratings", str(ML1M_RATINGS)]
runner = CliRunner()


def invoke(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    invoke("train", "mostpop", "--protocol", "strict", *DATA, "--set", "evaluation.max_users=200",
           "--out", root / "mostpop")
    invoke("train", "sknn", "--protocol", "strict", *DATA, "--set", "model.k=25", "--set", "model.last_n=20",
           "--set", "evaluation.max_users=200", "--out", root / "sknn")
    return root


@pytest.mark.integration
def test_tradeoff_writes_record_plot_and_table(runs, tmp_path):
    out = tmp_path / "strict" / "tradeoff.json"
    text = invoke("tradeoff", "--run", runs / "sknn", "--run", runs / "mostpop", "--label", "SKNN", "--label",
                  "MostPop", "--lambdas", "1,0.5,0", "--n-candidates", 30, "--max-users", 200, "--out", out, *DATA)
    record = json.loads(out.read_text())
    assert record["users"] == 200 and record["test_users"] == 2999
    assert [m["label"] for m in record["models"]] == ["SKNN", "MostPop"]
    sknn = {p["lambda"]: p["metrics"] for p in record["models"][0]["points"]}
    assert sorted(sknn) == [0.0, 0.5, 1.0]
    # MMR on genre similarity makes the lists more varied in genre, and costs accuracy
    assert sknn[0.0]["ild_genre@10"] > sknn[1.0]["ild_genre@10"]
    assert sknn[0.0]["NDCG@10"] < sknn[1.0]["NDCG@10"]
    # MostPop at lambda 1 shows the same ten films to almost everyone: far below SKNN's coverage
    mostpop = {p["lambda"]: p["metrics"] for p in record["models"][1]["points"]}
    assert mostpop[1.0]["catalog_coverage@10"] < sknn[1.0]["catalog_coverage@10"]
    # each MostPop point against SKNN's frontier, on both axes, with an interval or a "no rival" verdict
    assert len(record["frontier"]) == 3 * 2
    assert all("interval" in f or f["verdict"].startswith("no reference point") for f in record["frontier"])
    assert (tmp_path / "strict" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "| SKNN | 0.5 |" in text
    (tmp_path / "strict" / "tradeoff.png").unlink()
    rendered = invoke("tradeoff", "--render-only", "--out", out)   # from the record alone: the same table, the plot
    table = text[text.index("**Protocol"):].split("\nwrote ")[0]   # after the ranking's progress bars
    assert rendered.split("\nwrote ")[0] == table
    assert (tmp_path / "strict" / "tradeoff.png").exists()
    # the docs' table is the record rendered (dualrec table render): the same table, the protocol its folder
    assert {p: t.strip() for p, t in tradeoff_tables.render(tmp_path).items()} == {"strict": table.strip()}
    invoke("tradeoff", "--run", runs / "sknn", "--lambdas", "1,2", *DATA, "--out", tmp_path / "x.json", code=2)


@pytest.mark.integration
def test_evaluate_record_adds_the_new_metrics_and_refuses_another_model(runs, tmp_path):
    invoke("evaluate", "--run", runs / "sknn", *DATA, "--out", tmp_path)
    path = tmp_path / "result-strict-test.json"
    full = json.loads(path.read_text())
    old = dict(full, metrics={k: v for k, v in full["metrics"].items() if "@" not in k or k.startswith(
        ("HR@", "NDCG@", "MRR@"))})
    path.write_text(json.dumps(old, indent=2))
    text = invoke("evaluate", "--run", runs / "sknn", "--record", path, *DATA)
    assert "accuracy as recorded; added catalog_coverage@10=" in text
    again = json.loads(path.read_text())
    assert again["metrics"] == full["metrics"]
    assert again["refreshed"]["added"][0] == "catalog_coverage@10"
    text = invoke("evaluate", "--run", runs / "mostpop", "--record", path, *DATA, code=2)
    assert "does not reproduce the record" in text
    assert json.loads(path.read_text()) == again
    invoke("evaluate", "--record", path, *DATA, code=2)   # an sknn record names no weights: --run is needed


def test_reference_frontier_mixes_two_grid_points_by_hand():
    from dualrec.tradeoff import reference_at

    points = [{"metrics": {"ild_genre@10": x, "NDCG@10": y}} for x, y in ((0.6, 0.23), (0.7, 0.22), (0.8, 0.20))]
    # at 0.65: half the users on point 0, half on point 1 gives 0.225, above point 1 alone (0.22) and the 0-2 mix
    assert reference_at(points, "ild_genre@10", 0.65) == pytest.approx((0.5, 0, 1))
    # exactly on a point: the point itself beats the 0-2 mixture (0.215)
    assert reference_at(points, "ild_genre@10", 0.7) == (1.0, 1, 1)
    assert reference_at(points, "ild_genre@10", 0.85) is None
