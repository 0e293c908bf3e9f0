"""The DUALRec results table: a real row run writes its record, and re-rendering one protocol leaves the other
protocol's tables and the hand-written text alone (records of a protocol can be re-made without the other's)."""

from __future__ import annotations

import json

import numpy as np

from conftest import ML1M_DIR, ML1M_RATINGS, REPO


def test_row_record_renders_into_its_protocol_block_only(tmp_path, ml1m_small):
    from dualrec.llm import table
    from dualrec.models import build_model

    stage1 = build_model("mostpop", {})
    stage1.fit(ml1m_small.sequences(), ml1m_small.catalog)
    stage1.save(tmp_path / "stage1")
    out = tmp_path / "results"
    lstm_row = next(r for r in table.ROWS if r.key == "lstm")
    record = table.run_row(lstm_row, "paper", str(tmp_path / "stage1"), None,
                           {"data_dir": str(ML1M_DIR.parent), "ratings": str(ML1M_RATINGS)}, 40, out, {})
    saved = json.loads((out / "paper" / "lstm@40.json").read_text())   # a 40-user run: its own file and label
    assert saved["counts"]["users"] == record["counts"]["users"] == 40 and "[40 of 493 users]" in saved["label"]

    docs = tmp_path / "results.md"
    strict_block = "<!-- dualrec table: strict -->\nstrict rows of an earlier run\n<!-- end dualrec table: strict -->"
    docs.write_text("# Results\n<!-- section: dualrec -->\nhand-written text\n" + strict_block
                    + "\n<!-- end: dualrec -->\nafter\n")
    blocks = table.render(out)
    assert set(blocks) == {"paper"} and f"| {saved['label']} | 40 |" in blocks["paper"]
    assert f"{table.weights_digest(tmp_path / 'stage1')}, every row" in blocks["paper"]
    for _ in range(2):   # the second write replaces the block the first one inserted
        table.write_docs(blocks, docs)
        text = docs.read_text()
        assert text.count("<!-- dualrec table: paper -->") == 1 and saved["label"] in text
        assert strict_block in text and "hand-written text" in text and text.endswith("<!-- end: dualrec -->\nafter\n")
        assert text.index("<!-- end dualrec table: paper -->") < text.index("<!-- end: dualrec -->")
    # --render-only --protocol strict renders strict alone: no strict records here, so the doc does not change
    table.main(["--render-only", "--protocol", "strict", "--out", str(out), "--docs", str(docs)])
    assert docs.read_text() == text
    table.main(["--render-only", "--out", str(out), "--docs", str(docs)])   # all protocols with records
    assert docs.read_text() == text


def test_llm_dtype_is_the_recorded_one_else_the_config_value():
    """A record made since the LLM's identity is kept shows the precision actually used ("auto" resolves per CPU);
    an older record shows what its config said."""
    from dualrec.llm.table import llm_dtype

    config = {"model": {"backend": {"kind": "hf", "dtype": "auto"}}}
    assert llm_dtype({"config": config, "llm": {"kind": "hf", "dtype": "float32"}}) == "float32"
    assert llm_dtype({"config": config}) == "auto"
    assert llm_dtype({"config": {"model": {}}}) == "?"


def test_rows_on_other_stage1_weights_are_flagged(tmp_path, ml1m_small):
    """Retrained on another CPU, a seeded Stage 1 has other weights: rows on different ones say so in the table."""
    from dualrec.llm import table
    from dualrec.models import build_model

    digests, seqs = [], ml1m_small.sequences()
    for n in (2, 3):   # two Stage-1 models whose weights differ: popularity counted over different users
        stage1 = build_model("mostpop", {})
        stage1.fit(seqs.select(np.arange(len(seqs)) < len(seqs) // n), ml1m_small.catalog)
        stage1.save(tmp_path / f"stage1-{n}")
        digests.append(table.weights_digest(tmp_path / f"stage1-{n}"))
    assert digests[0] != digests[1] and digests[0] == table.weights_digest(tmp_path / "stage1-2")
    out = tmp_path / "results"
    lstm_row = next(r for r in table.ROWS if r.key == "lstm")
    data = {"data_dir": str(ML1M_DIR.parent), "ratings": str(ML1M_RATINGS)}
    for n, users in ((2, 20), (3, 30)):
        table.run_row(lstm_row, "paper", str(tmp_path / f"stage1-{n}"), None, data, users, out, {})
    block = table.render(out)["paper"]
    assert "Rows on different Stage-1 weights" in block and all(d in block for d in digests)


def test_committed_results_md_shows_the_committed_records():
    """docs/results.md's DUALRec tables are exactly what ``--render-only`` makes of results/dualrec/: a record
    re-made without re-rendering, or a table edited by hand, fails here."""
    from dualrec.llm import table

    doc = (REPO / "docs" / "results.md").read_text()
    blocks = table.render(REPO / "results" / "dualrec")
    assert set(blocks) == {"paper", "strict"}
    for protocol, text in blocks.items():
        block = f"<!-- dualrec table: {protocol} -->\n{text.rstrip()}\n<!-- end dualrec table: {protocol} -->"
        assert block in doc, f"docs/results.md's {protocol} table differs from results/dualrec/{protocol}/: re-render it"
