"""`dualrec benchmark`: every listed model, both protocols, one evaluator; tables, chart, tuning, resume, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualrec.benchmark import BenchmarkConfig, run_benchmark
from conftest import ML1M_RATINGS, SHARED_DATA, REPO


def _config(tmp_path, models, **extra) -> BenchmarkConfig:
    return BenchmarkConfig.from_dict({"models": models, "out": str(tmp_path / "out"), "protocols": ["strict", "paper"],
                                      "evaluation": {"ks": [1, 5, 10, 20]}, **extra})


def test_quick_benchmark_writes_json_tables_chart_and_paper_comparison(tmp_path, ml1m_top1000):
    cfg = _config(tmp_path, ["mostpop", {"name": "gru4rec", "hidden": 32}],
                  quick={"users": 300, "epochs": 1, "max_windows": 3000, "max_eval_users": 80})
    records = run_benchmark(cfg, quick=True, progress=False, dataset=ml1m_top1000)
    out = tmp_path / "out"
    assert set(records) == {"strict", "paper"}
    for protocol, recs in records.items():
        assert [r["model"] for r in recs] == ["mostpop", "gru4rec"]
        for r in recs:
            saved = json.loads((out / protocol / f"{r['model']}.json").read_text())
            assert saved["protocol"] == protocol and saved["quick"] is True
            assert saved["counts"]["users"] <= 80 and saved["timings"]["users_per_s"] > 0
            assert (out / "runs" / protocol / r["model"] / "model" / "config.json").exists()
        gru = next(r for r in recs if r["model"] == "gru4rec")
        assert gru["config"]["model"]["epochs"] == 1 and gru["config"]["model"]["hidden"] == 32
        table = (out / f"{protocol}.md").read_text()
        # a budgeted neural fit is labelled with its budget wherever it is shown
        assert gru["label"] == "gru4rec (1 ep x 3k rows)" and "label" not in recs[0]
        assert "| mostpop |" in table and "| gru4rec (1 ep x 3k rows) |" in table
        assert f"Protocol: {protocol}" in table
        png = (out / f"{protocol}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the splits differ: the paper protocol tests whole held-out users, strict tests every user's last item
    assert records["strict"][0]["data"]["split_counts"] != records["paper"][0]["data"]["split_counts"]
    comparison = (out / "paper-table.md").read_text()
    assert "| mostpop | 0.0004 | 0.0070 | 0.0053 |" in comparison
    assert "| gru4rec (1 ep x 3k rows) | - | - | - |" in comparison


def test_tuning_uses_the_validation_split_and_keeps_the_best(tmp_path, ml1m_small):
    cfg = _config(tmp_path, [{"name": "sknn", "tune": {"k": [1, 200]}}], protocols=["strict"])
    rec = run_benchmark(cfg, progress=False, dataset=ml1m_small)["strict"][0]
    trials = rec["tuning"]
    assert [t["options"]["k"] for t in trials] == [1, 200]
    best = max(trials, key=lambda t: t["valid"]["NDCG@10"])
    assert rec["config"]["model"]["k"] == best["options"]["k"]
    assert trials[0]["valid"]["NDCG@10"] != trials[1]["valid"]["NDCG@10"]


def test_existing_results_are_kept_unless_forced(tmp_path, ml1m_small):
    cfg = _config(tmp_path, ["mostpop"], protocols=["strict"])
    run_benchmark(cfg, progress=False, dataset=ml1m_small)
    path = tmp_path / "out" / "strict" / "mostpop.json"
    marked = json.loads(path.read_text())
    marked["label"] = "kept"
    path.write_text(json.dumps(marked))
    assert run_benchmark(cfg, progress=False, dataset=ml1m_small)["strict"][0]["label"] == "kept"
    assert "label" not in run_benchmark(cfg, force=True, progress=False, dataset=ml1m_small)["strict"][0]


def test_quick_never_raises_a_budget_and_an_entry_may_set_its_own():
    from dualrec.benchmark import QuickConfig, candidate_options

    quick = QuickConfig(epochs=1, max_windows=20000)
    [small] = candidate_options({"name": "duip", "max_windows": 960, "epochs": 3}, quick)
    assert small["max_windows"] == 960 and small["epochs"] == 1 and small["progress"] is False
    [own] = candidate_options({"name": "duip", "max_windows": None, "quick": {"max_windows": 192}}, quick)
    assert own["max_windows"] == 192 and "quick" not in own
    [neural] = candidate_options({"name": "narm"}, quick)
    assert neural["max_windows"] == 20000
    [full] = candidate_options({"name": "duip", "max_windows": None, "quick": {"max_windows": 192}}, None)
    assert full["max_windows"] is None and "quick" not in full


def test_config_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        BenchmarkConfig.from_dict({"modles": ["sknn"]})
    with pytest.raises(ValueError, match="no name"):
        BenchmarkConfig.from_dict({"models": [{"k": 3}]})
    with pytest.raises(ValueError, match=r"\['nosuch'\] not in"):
        BenchmarkConfig.from_dict({"models": ["sknn"]}).select(["nosuch"])
    shipped = BenchmarkConfig.load(REPO / "configs" / "paper-table.yaml")
    from dualrec.models import MODELS
    assert all(m["name"] in MODELS for m in shipped.models) and shipped.protocols == ["strict", "paper"]


@pytest.mark.integration
def test_cli_benchmark_quick_subset(tmp_path):
    from dualrec.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["benchmark", "-c", str(REPO / "configs" / "paper-table.yaml"), "--quick",
                                      "--models", "mostpop,sknn", "--data-dir", str(SHARED_DATA), "--ratings",
                                      str(ML1M_RATINGS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "paper").glob("*.json")) == ["mostpop.json", "sknn.json"]
    assert "| sknn |" in result.output
    bad = CliRunner().invoke(app, ["benchmark", "-c", str(REPO / "configs" / "paper-table.yaml"), "--models", "x"])
    assert bad.exit_code == 2 and "not in the config's models" in bad.output


@pytest.mark.integration
def test_each_protocol_gets_its_own_top_items_source(tmp_path):
    """strict keeps the paper's all-data filter, chrono counts its training side: one benchmark, two catalogs, and
    the first protocol's fit does not change the second's source."""
    cfg = _config(tmp_path, ["mostpop"], protocols=["strict", "chrono"],
                  data={"data_dir": str(SHARED_DATA), "ratings": str(ML1M_RATINGS)},
                  quick={"users": 300, "epochs": 1, "max_windows": 2000, "max_eval_users": 50})
    records = run_benchmark(cfg, quick=True, progress=False)
    filters = {p: r[0]["data"]["filters"] for p, r in records.items()}
    assert (filters["strict"]["top_items_from"], filters["chrono"]["top_items_from"]) == ("all", "train")
    assert filters["chrono"]["top_items_time_cuts"] == [976862649, 980998147]
    assert records["chrono"][0]["data"]["split_counts"]["time_cuts"] == [976862649, 980998147]


def test_a_record_carries_per_user_ranks_history_commit_and_its_own_name(tmp_path, ml1m_small):
    """Two runs of one model get two records (``record``); each holds what the bootstrap and a re-score need."""
    cfg = _config(tmp_path, [{"name": "mostpop", "record": "mostpop-again"}], protocols=["strict"],
                  runs=str(tmp_path / "runs"))
    rec = run_benchmark(cfg, progress=False, dataset=ml1m_small)["strict"][0]
    saved = json.loads((tmp_path / "out" / "strict" / "mostpop-again.json").read_text())
    assert saved["run_dir"] == str(tmp_path / "runs" / "strict" / "mostpop-again")
    assert (tmp_path / "runs" / "strict" / "mostpop-again" / "model" / "config.json").exists()
    users, ranks = saved["per_user"]["users"], saved["per_user"]["ranks"]
    assert len(users) == len(ranks) == rec["counts"]["users"]
    hits = [r for r in ranks if 0 <= r < 10]
    assert len(hits) / len(ranks) == pytest.approx(rec["metrics"]["HR@10"], abs=1e-12)
    assert saved["commit"] is None or len(saved["commit"].split("+")[0]) == 40


def _record(model: str, ndcg10: float, history: list[float], patience=3) -> dict:
    return {"model": model, "protocol": "strict", "config": {"model": {"name": model, "patience": patience}},
            "data": {"name": "ml-1m", "fingerprint": "abc", "catalog_items": 1000}, "counts": {"users": 2999},
            "metrics": {"HR@1": 0.1, "HR@5": 0.25, "HR@10": 0.375, "NDCG@5": 0.2, "NDCG@10": ndcg10},
            "timings": {"fit_s": 812.4}, "history": [{"epoch": i + 1, "val_ndcg10": v} for i, v in enumerate(history)]}


def test_records_table_shows_each_records_numbers_and_the_epoch_validation_kept():
    from dualrec.benchmark import records_table

    table = records_table([_record("sasrec", 0.23456, [0.1, 0.3, 0.2, 0.25]), _record("mostpop", 0.02, [], None)],
                          missing=["narm"])
    assert "ml-1m (abc, 1000 items, 2999 test users)" in table
    assert "| sasrec | 0.1000 | 0.2500 | 0.3750 | 0.2000 | 0.2346 | 2 / 4 | 812 | - | - | - | - | - | - | - |" in table
    assert ("| mostpop | 0.1000 | 0.2500 | 0.3750 | 0.2000 | 0.0200 | - | 812 | 0.0004 | 0.0070 | 0.0053 | - | - | - "
            "| - |") in table
    assert table.rstrip().endswith("Not yet run with this configuration: narm.")


def test_results_md_tables_are_the_committed_records_rendered():
    """docs/results.md's baselines table is the committed records rendered: a record and
    its table row cannot disagree."""
    from dualrec.benchmark import render_records
    from dualrec.tables.docs import docs_markers

    cfg = BenchmarkConfig.load(REPO / "configs" / "paper-table.yaml")
    cfg = BenchmarkConfig.from_dict({**{"models": cfg.models, "protocols": ["strict"]},
                                     "out": str(REPO / "results")})
    doc = (REPO / "docs" / "results.md").read_text()
    blocks = render_records(cfg)
    assert blocks, "no committed record of the paper table"
    for protocol, table in blocks.items():
        begin, end = docs_markers(protocol, "baselines")
        assert doc[doc.index(begin) + len(begin):doc.index(end)].strip() == table.strip()
