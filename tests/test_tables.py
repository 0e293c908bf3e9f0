"""The DUALRec and ranker tables: a real row run writes its record (dualrec.rows), the tables are rendered from
records only (dualrec.tables), and re-rendering one protocol leaves the other protocol's tables and the hand-written
text alone (records of a protocol can be re-made without the other's)."""

from __future__ import annotations

import pytest

import json

import numpy as np

from typer.testing import CliRunner

from conftest import ML1M_DIR, ML1M_RATINGS, REPO
from dualrec import rows
from dualrec.cli import app
from dualrec.models import build_model
from dualrec.tables import docs as pages
from dualrec.tables import llm as tables

pytestmark = pytest.mark.integration   # every test here reads the MovieLens copy by path


def test_row_record_renders_into_its_protocol_block_only(tmp_path, ml1m_small):
    stage1 = build_model("mostpop", {})
    stage1.fit(ml1m_small.sequences(), ml1m_small.catalog)
    stage1.save(tmp_path / "stage1")
    out = tmp_path / "results"
    lstm_row = next(r for r in rows.ROWS if r.key == "lstm")
    record = rows.run_row(lstm_row, "paper", str(tmp_path / "stage1"), None,
                           {"data_dir": str(ML1M_DIR.parent), "ratings": str(ML1M_RATINGS)}, 40, out, {})
    saved = json.loads((out / "paper" / "lstm@40.json").read_text())   # a 40-user run: its own file and label
    assert saved["counts"]["users"] == record["counts"]["users"] == 40 and "[40 of 493 users]" in saved["label"]
    assert saved["config"]["model"]["name"] == "mostpop"   # the loaded Stage 1's own config, not configs/lstm.yaml

    docs = tmp_path / "results.md"
    strict_block = "<!-- dualrec table: strict -->\nstrict rows of an earlier run\n<!-- end dualrec table: strict -->"
    docs.write_text("# Results\n<!-- section: dualrec -->\nhand-written text\n" + strict_block
                    + "\n<!-- end: dualrec -->\nafter\n")
    blocks = tables.render(out)
    assert set(blocks) == {"paper"} and f"| {saved['label']} | 40 |" in blocks["paper"]
    assert f"{rows.weights_digest(tmp_path / 'stage1')}, every row" in blocks["paper"]
    for _ in range(2):   # the second write replaces the block the first one inserted
        docs.write_text(pages.insert_blocks(docs.read_text(), blocks, "dualrec"))
        text = docs.read_text()
        assert text.count("<!-- dualrec table: paper -->") == 1 and saved["label"] in text
        assert strict_block in text and "hand-written text" in text and text.endswith("<!-- end: dualrec -->\nafter\n")
        assert text.index("<!-- end dualrec table: paper -->") < text.index("<!-- end: dualrec -->")
    # rendering strict alone: no strict records here, so the page does not change; all protocols: the same page
    assert pages.insert_blocks(text, {p: t for p, t in tables.render(out).items() if p == "strict"}, "dualrec") == text
    assert pages.insert_blocks(text, tables.render(out), "dualrec") == text


def test_llm_label_is_the_recorded_model_and_precision_else_the_config_values():
    """A record made since the LLM's identity is kept shows the precision actually used ("auto" resolves per CPU);
    an older record shows what its config said."""
    config = {"model": {"backend": {"kind": "hf", "model_name": "embedded", "dtype": "auto"}}}
    assert tables.llm_label({"config": config, "llm": {"kind": "hf", "model": "embedded", "dtype": "float32"}}) \
        == "embedded, float32"
    assert tables.llm_label({"config": config}) == "embedded, auto"
    assert tables.llm_label({"config": {"model": {"backend": {"kind": "openai", "model": "deepseek/deepseek-chat"}}}}) \
        == "deepseek/deepseek-chat"
    assert tables.llm_label({"config": {"model": {}}}) == "?"


def test_set_overrides_reach_every_llm_row_not_stage1(tmp_path, ml1m_small):
    """``--set`` swaps the LLM of the whole table (the paper's 7B on a GPU); here the embedded GGUF through llama.cpp
    answers two real users instead of transformers, and the LSTM row is untouched."""
    stage1 = build_model("mostpop", {})
    stage1.fit(ml1m_small.sequences(), ml1m_small.catalog)
    stage1.save(tmp_path / "stage1")
    out = tmp_path / "results"
    result = CliRunner().invoke(app, [
        "table", "run", "--protocol", "paper", "--stage1", str(tmp_path / "stage1"), "--rows", "lstm,llm-only",
        "--max-users", "lstm=2", "--max-users", "llm-only=2", "--data-dir", str(ML1M_DIR.parent),
        "--ratings", str(ML1M_RATINGS), "--out", str(out), "--set", "model.backend={kind: llama_cpp, n_threads: 1}",
        "--set", "model.max_new_tokens=16", "--set", "model.cache=false"])
    assert result.exit_code == 0, result.output
    llm = json.loads((out / "paper" / "llm-only@2.json").read_text())
    assert llm["config"]["model"]["backend"]["kind"] == "llama_cpp" and llm["config"]["model"]["max_new_tokens"] == 16
    assert llm["llm"]["kind"] == "llama_cpp" and llm["counts"]["users"] == 2
    assert "max_new_tokens" not in json.loads((out / "paper" / "lstm@2.json").read_text())["config"]["model"]
    assert f"| {llm['label']} | {tables.llm_label(llm)} |" in tables.render(out)["paper"]


def test_rows_on_other_stage1_weights_are_flagged(tmp_path, ml1m_small):
    """Retrained on another CPU, a seeded Stage 1 has other weights: rows on different ones say so in the table."""
    digests, seqs = [], ml1m_small.sequences()
    for n in (2, 3):   # two Stage-1 models whose weights differ: popularity counted over different users
        stage1 = build_model("mostpop", {})
        stage1.fit(seqs.select(np.arange(len(seqs)) < len(seqs) // n), ml1m_small.catalog)
        stage1.save(tmp_path / f"stage1-{n}")
        digests.append(rows.weights_digest(tmp_path / f"stage1-{n}"))
    assert digests[0] != digests[1] and digests[0] == rows.weights_digest(tmp_path / "stage1-2")
    out = tmp_path / "results"
    lstm_row = next(r for r in rows.ROWS if r.key == "lstm")
    data = {"data_dir": str(ML1M_DIR.parent), "ratings": str(ML1M_RATINGS)}
    for n, users in ((2, 20), (3, 30)):
        rows.run_row(lstm_row, "paper", str(tmp_path / f"stage1-{n}"), None, data, users, out, {})
    block = tables.render(out)["paper"]
    assert "Rows on different Stage-1 weights" in block and all(d in block for d in digests)


def test_committed_results_md_shows_the_committed_records(tmp_path):
    """docs/results.md's generated tables are exactly what `dualrec table render` makes of the committed records: a
    record re-made without re-rendering, or a table edited by hand, fails here; so does `--check` on such a page."""
    for section in pages.SECTIONS:
        doc = (REPO / section.page).read_text()
        blocks = section.render(REPO / section.folder)
        assert blocks, f"no records for section {section.name} under {section.folder}"
        for protocol, text in blocks.items():
            assert pages.docs_block(protocol, text, section.name) in doc, \
                f"{section.page}'s {section.name} {protocol} table differs from {section.folder}/: re-render it"
    doc = (REPO / "docs" / "results.md").read_text()
    same = CliRunner().invoke(app, ["table", "render", "--root", str(REPO), "--docs", str(REPO / "docs" / "results.md"),
                                    "--check"])
    assert same.exit_code == 0 and "pages match their records" in same.output
    edited = tmp_path / "results.md"
    edited.write_text(doc.replace("| LSTM alone (Stage 1) |", "| LSTM alone (Stage 1, edited) |", 1))
    check = CliRunner().invoke(app, ["table", "render", "--root", str(REPO), "--docs", str(edited), "--check"])
    assert check.exit_code == 2 and "differs from its records" in check.output
    unknown = CliRunner().invoke(app, ["table", "render", "--docs", str(edited), "--section", "nope"])
    assert unknown.exit_code == 2 and "unknown docs section 'nope'" in unknown.output


def test_a_fusion_row_records_its_weights_interval_and_per_user_ranks(tmp_path, ml1m_small):
    """A real ranker row (Stage 1 + SBERT, weights chosen on validation) through the table command: the record holds
    what the tables and `dualrec compare` need, and the interval table shows it."""
    stage1 = build_model("mostpop", {})
    stage1.fit(ml1m_small.sequences(), ml1m_small.catalog)
    stage1.save(tmp_path / "stage1")
    row = rows.Row("dualrec-rank-sbert", "ranker test row", "configs/dualrec-rank.yaml",
                    {"model.signals": ["sbert"], "model.max_valid_users": 50, "model.grid_step": 0.5})
    record = rows.run_row(row, "strict", str(tmp_path / "stage1"), None,
                           {"data_dir": str(ML1M_DIR.parent), "ratings": str(ML1M_RATINGS)}, 60, tmp_path, {})
    assert record["coverage"] == 1.0 and set(record["alpha"]) == {"stage1", "sbert"}
    assert [g["weights"]["stage1"] for g in record["selection"]["grid"]] == [0.0, 0.5, 1.0]
    assert len(record["per_user"]["ranks"]) == 60 and record["ci"]["n_users"] == 60
    ranks = np.array(record["per_user"]["ranks"])
    assert record["metrics"]["HR@10"] == np.mean((ranks >= 0) & (ranks < 10))
    lo, hi = record["ci"]["delta_NDCG@10"]
    assert lo <= record["ci"]["delta"]["NDCG@10"] <= hi
    text = tables.ci_table([record])
    assert "| ranker test row [60 of 2999 users] | - | 60 | " in text and f"stage1 {record['alpha']['stage1']:g}" in text
