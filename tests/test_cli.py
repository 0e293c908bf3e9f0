"""The command line end to end on the real ML-1M copy: train, evaluate (both protocols), predict, recommend."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualrec.cli import app
from conftest import ML1M_RATINGS, SHARED_DATA

pytestmark = pytest.mark.integration   # every test here reads the MovieLens copy by path

DATA = ["--data-dir", str(SHARED_DATA), "--ratings", str(ML1M_RATINGS)]
TINY = ["--set", "model.max_windows=1500", "--set", "model.epochs=1", "--set", "model.progress=false"]
runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lstm-paper"
    invoke("train", "lstm", "-c", "configs/lstm.yaml", "--protocol", "paper", *DATA, *TINY, "--devices", 1,
           "--strategy", "auto", "--out", out)
    return out


def test_train_writes_a_complete_run(run_dir):
    for name in ("experiment.yaml", "model/config.json", "model/model.safetensors", "history.json",
                 "training_curves.png", "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    model = json.loads((run_dir / "model" / "config.json").read_text())["config"]
    assert (model["devices"], model["strategy"], model["targets"]) == (1, "auto", "last")


def test_evaluate_writes_json_and_markdown(run_dir, ml1m_top1000):
    out = invoke("evaluate", "--run", run_dir, "--protocol", "paper")
    assert "Protocol: paper" in out
    record = json.loads((run_dir / "result-paper-test.json").read_text())
    assert record["protocol"] == "paper" and record["counts"]["users"] == 493
    assert record["data"]["fingerprint"] == ml1m_top1000.fingerprint()  # the run names the data it was scored on
    assert {"HR@1", "HR@5", "NDCG@5", "MRR@20", "genre_jaccard", "genre_jaccard_best"} <= set(record["metrics"])
    assert (run_dir / "result-paper-test.md").read_text().startswith("Protocol: paper")


def test_evaluate_refuses_another_protocol(run_dir):
    result = runner.invoke(app, ["evaluate", "--run", str(run_dir), "--protocol", "strict"])
    assert result.exit_code == 2 and "trained under protocol 'paper'" in result.output


def test_predict_jsonl_can_be_rescored_without_dualrec(run_dir, tmp_path):
    out = tmp_path / "preds.jsonl"
    invoke("predict", "--run", run_dir, "--k", 20, "--out", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 493
    assert set(rows[0]) >= {"user", "history", "target", "items", "scores"}
    # anyone can re-score: HR@20 from the file equals the evaluator's
    hr20 = sum(bool(set(r["items"][:20]) & set(r["target"])) for r in rows) / len(rows)
    record = json.loads((run_dir / "result-paper-test.json").read_text())
    assert hr20 == pytest.approx(record["metrics"]["HR@20"])


def test_recommend_by_user_and_history(run_dir):
    out = invoke("recommend", "--run", run_dir, "--history", "1193,661,914", "--k", 5, *DATA)
    assert out.count("score=") == 5 and "One Flew Over the Cuckoo's Nest (1975)" in out
    assert invoke("recommend", "--run", run_dir, "--user", 42, "--k", 3, *DATA).count("score=") == 3
    bad = runner.invoke(app, ["recommend", "--run", str(run_dir), "--history", "1193,999999"])
    assert bad.exit_code == 2 and "999999" in bad.output


def test_evaluate_fits_a_config_without_a_run(tmp_path):
    out = invoke("evaluate", "--model", "mostpop", "--protocol", "strict", *DATA, "--out", tmp_path)
    record = json.loads((tmp_path / "result-strict-test.json").read_text())
    assert record["model"] == "mostpop" and record["counts"]["users"] == 2999
    assert "mostpop" in out


def test_data_info_counts_and_missing_data(tmp_path):
    assert "kept 487,650" in invoke("data", "info", "ml-1m", *DATA)
    missing = runner.invoke(app, ["data", "info", "ml-1m", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "dualrec data download ml-1m" in missing.output


def test_ground_nulls_made_up_sequels_and_remakes_and_names_bad_lines():
    answers = ["- Die Hard 4", "3. The Godfather Part IV", "2. Toy Story 4", "1. Planet of the Apes (2001)",
               "Sure! Here are three:\n1. Toy Story (1995)\n2. **Fargo**\nThe Matrix\nI hope you enjoy them!", None]
    result = runner.invoke(app, ["ground", *DATA, "ml-1m", "--summary"],
                           input="".join(json.dumps(a) + "\n" for a in answers))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [[t["item"] for t in r["titles"]] for r in rows] == [[None], [None], [None], [None], [1, 608, 2571], []]
    assert rows[0]["titles"][0] == {"text": "Die Hard 4", "item": None, "title": None, "score": 90.0,
                                    "why": "sequel: 4 in the text, 2 in Die Hard 2 (1990)"}
    assert rows[4]["titles"][2]["why"] == "exact: The Matrix (1999)"
    assert json.loads(result.stderr.splitlines()[-1]) == {"answers": 6, "titles": 7, "ungrounded": 4, "ambiguous": 0,
                                                          "hallucination_rate": 4 / 7}
    bad = runner.invoke(app, ["ground", *DATA, "ml-1m"], input='"1. Heat (1995)"\n{"text": "Heat"}\n')
    assert bad.exit_code == 2
    assert "stdin line 2: a JSON dict, expected a string (the answer) or null" in bad.output
