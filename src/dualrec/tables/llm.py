"""The DUALRec and ranker tables of docs/results.md, rendered from the records :mod:`dualrec.rows` writes."""

from __future__ import annotations

import json
from pathlib import Path

from dualrec.evaluation.report import markdown_table
from dualrec.rows import COLUMNS, FALLBACK, ROWS
from dualrec.tables.cells import delta_cell, sample_suffix

ANSWERED = ("HR@1", "HR@5", "HR@10", "NDCG@5")


def render(out_dir: Path) -> dict[str, str]:
    """The tables of each protocol that has result records, as Markdown: ``{protocol: text}``."""
    order = {r.key: i for i, r in enumerate(ROWS)}
    blocks = {}
    for protocol in ("paper", "strict"):
        recs = [json.loads(p.read_text()) for p in sorted((out_dir / protocol).glob("*.json"))]
        recs = [r for r in recs if r.get("row") in order]   # this table's rows; other commands' records stay out
        recs = sorted(recs, key=lambda r: (order.get(r.get("row"), 99), -r["counts"]["users"]))
        for r in recs:   # a row's label is the table's current one (records written before a relabelling too)
            if r.get("row") in order:
                r["label"] = ROWS[order[r["row"]]].label + sample_suffix(r["label"])
        if not recs:
            continue
        parts = [f"**Protocol `{protocol}`** ({recs[0]['protocol_note']}).\n", markdown_table(recs, COLUMNS)]
        digests = {r.get("stage1_digest", "not recorded") for r in recs}
        parts.append(f"Stage-1 weights (sha256 of the safetensors): {digests.pop()}, every row.\n" if len(digests) == 1
                     else "**Rows on different Stage-1 weights** (sha256 of the safetensors): " + ", ".join(
                         f"{r['label']}: {r.get('stage1_digest', 'not recorded')}" for r in recs) + ".\n")
        stage_lines = []
        for r in recs:
            stages = {k[6:-11]: v for k, v in r["timings"].items() if k.startswith("stage_")}
            c = r["counts"]
            if "fallbacks" in c and not is_fusion(r):
                stage_lines.append(f"| {r['label']} | {llm_label(r)} | {c['fallbacks']} | {c['generated_titles']} | "
                                   f"{c['ungrounded_titles']} | " + " | ".join(
                                       f"{stages.get(s, 0.0):.3f}" for s in ("lstm", "prompt", "llm", "parse",
                                                                             "rerank")) + " |")
        if stage_lines:
            parts.append("\n| row | LLM | fallbacks | titles generated | ungrounded | lstm s/user | prompt | "
                         "llm | parse | rerank |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                         + "\n".join(stage_lines) + "\n")
        answered = [r for r in recs if (r.get("answered") or {}).get("users") and not is_fusion(r)]
        if answered:
            parts.append("\nUsers whose list came from the LLM (no fallback), LLM list / Stage 1's ranking of the same "
                         "users:\n\n| row | LLM-answered users | " + " | ".join(ANSWERED) + " |\n|---|---:|"
                         + "---:|" * len(ANSWERED) + "\n" + "\n".join(
                             f"| {r['label']} | {r['answered']['users']} | " + " | ".join(
                                 f"{r['answered']['llm'][m]:.4f} / {r['answered']['stage1'][m]:.4f}"
                                 for m in ANSWERED) + " |" for r in answered) + "\n")
        parts += [t for t in (coverage_table(recs), ci_table(recs)) if t]
        blocks[protocol] = "\n".join(parts)
    return blocks


OWN = ("HR@1", "HR@5", "HR@10", "NDCG@10")


def is_fusion(record: dict) -> bool:
    """A ranker row: every user answered, nothing generated (the generate-path tables do not apply)."""
    return record["config"]["model"].get("name") == "fusion"


def coverage_table(recs: list[dict]) -> str:
    """For rows whose unanswered users got the Stage-1 list: what the LLM's own lists score over ALL users, an
    unanswered user counted as a miss (from the record's answered-user metrics: a metric over the answered users
    times their share). This is the row an "LLM only" label may carry."""
    lines = []
    for r in recs:
        a, c = r.get("answered") or {}, r["counts"]
        if not c.get("fallbacks") or not a.get("users"):
            continue
        share = a["users"] / c["users"]
        lines.append(f"| {r['label'].replace(FALLBACK, '')} | {a['users']} of {c['users']} ({share:.3f}) | "
                     + " | ".join(f"{a['llm'][m] * share:.4f}" if m in a["llm"] else "-" for m in OWN) + " |")
    if not lines:
        return ""
    return ("\nThe LLM's own lists, no fallback: an unanswered user is a miss (coverage = users the LLM answered "
            "with at least one new catalog item):\n\n| row | coverage | " + " | ".join(OWN) + " |\n|---|---:|"
            + "---:|" * len(OWN) + "\n" + "\n".join(lines) + "\n")


def ci_table(recs: list[dict]) -> str:
    """Rows with a paired-bootstrap interval against their own Stage 1 (same users, 1,000 resamples)."""
    lines = []
    for r in recs:
        ci = r.get("ci")
        if not ci:
            continue
        cells = []
        for m in ("NDCG@10", "HR@10"):
            cells.append(f"{r['metrics'][m]:.4f} | {delta_cell(ci, m)}")
        alpha = r.get("alpha")
        weights = ", ".join(f"{k} {v:g}" for k, v in alpha.items()) if alpha else "-"
        chosen = (r.get("selection") or {}).get("chosen_on", "")
        llm = llm_label(r) if r.get("llm") else "-"
        lines.append(f"| {r['label']} | {llm} | {ci['n_users']} | " + " | ".join(cells) + f" | {weights}"
                     + (f" ({chosen})" if chosen else "") + f" | {r.get('coverage', float('nan')):.3f} | "
                     f"{r['timings']['s_per_user']:.3f} |")
    if not lines:
        return ""
    return ("\nAgainst this table's Stage 1 on the same users: the difference and its paired-bootstrap 95 % interval "
            "(1,000 resamples; **(> 0)**: the interval excludes 0):\n\n| row | LLM | users | NDCG@10 | delta NDCG@10 "
            "[95 % CI] | HR@10 | delta HR@10 [95 % CI] | weights | coverage | s/user |\n"
            "|---|---|---:|---:|---|---:|---|---|---:|---:|\n" + "\n".join(lines) + "\n")


def llm_label(record: dict) -> str:
    """The LLM that answered and the precision it ran in: recorded since "auto" resolves per machine; older records
    give their config's values."""
    llm = record.get("llm") or {}
    backend = record["config"]["model"].get("backend", {})
    model = llm.get("model") or backend.get("model_name") or backend.get("model") or "?"
    dtype = llm.get("dtype") or backend.get("dtype")
    return f"{model}, {dtype}" if dtype else str(model)


