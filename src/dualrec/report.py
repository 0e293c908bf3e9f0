"""The main job's report as one self-contained HTML page: metrics table, training curve, hit-rate@k per model and
one example user. Images are embedded as base64 data URIs and there is no script or external stylesheet, so the
page opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from matplotlib.figure import Figure

TABLE_METRICS = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@10", "MRR@20", "coverage")

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.3em .6em}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}caption{text-align:left;
padding:.3em 0;color:#555}img{max-width:100%}.hit{background:#e4f5e4;font-weight:600}pre{background:#f7f7f7;
padding:.6em;white-space:pre-wrap}.cols{display:flex;gap:1.5em;flex-wrap:wrap}.cols>div{flex:1;min-width:230px}
"""


def data_uri_png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def hit_rate_plot(rows: list[dict]) -> bytes:
    """HR@k for k = 1..K, one line per model, as PNG bytes."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    for r in rows:
        curve = r["hit_rate_curve"]
        ax.plot(range(1, len(curve) + 1), curve, "-o", ms=3, label=r["label"])
    k = max((len(r["hit_rate_curve"]) for r in rows), default=1)
    ax.set_xticks(sorted({1, *range(5, k + 1, 5), k}))
    ax.set_xlabel("k (list length)")
    ax.set_ylabel("hit rate @ k")
    ax.set_title("hit rate @ k, the same test users")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _esc(x) -> str:
    return html.escape(str(x))


def metrics_table(summary: dict) -> str:
    rows = summary["rows"]
    cols = [m for m in TABLE_METRICS if any(m in r["metrics"] for r in rows)]
    out = [f"<table><caption>{_esc(summary['caption'])}</caption><tr><th>model</th><th>users</th>"
           + "".join(f"<th>{_esc(c)}</th>" for c in cols) + "<th>s/user</th></tr>"]
    for r in rows:
        cells = "".join(f"<td class=n>{r['metrics'][c]:.4f}</td>" if c in r["metrics"] else "<td class=n>-</td>"
                        for c in cols)
        out.append(f"<tr><td>{_esc(r['label'])}</td><td class=n>{r['counts']['users']}</td>{cells}"
                   f"<td class=n>{r['timings']['s_per_user']:.4f}</td></tr>")
    out.append("</table>")
    b = summary.get("bootstrap")
    if b:
        lo, hi = b["delta_NDCG@10"]
        out.append(f"<p>{_esc(b['a'])} minus {_esc(b['b'])}: NDCG@10 {b['delta']['NDCG@10']:+.4f}, 95 % paired-"
                   f"bootstrap interval [{lo:+.4f}, {hi:+.4f}] over {b['n_users']} users "
                   f"({_esc(verdict(b))}).</p>")
    fused = rows[-1]
    if fused.get("weights"):
        out.append("<p>Fusion weights (" + _esc(fused.get("weights_chosen_on", "")) + "): "
                   + ", ".join(f"{_esc(k)} {v:g}" for k, v in fused["weights"].items()) + ".</p>")
    return "\n".join(out)


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def verdict(b: dict) -> str:
    """What a paired-bootstrap interval of A - B says, in words."""
    lo, hi = b["delta_NDCG@10"]
    if lo > 0:
        return f"{b['a']} is better on these users"
    if hi < 0:
        return f"{b['b']} alone is better on these users"
    return "no difference shown on these users"


def grounded_text(gen: dict) -> str:
    """What the generated answer grounds to: new catalog movies, titles the user already rated, invented ones."""
    text = "grounded to new catalog movies: " + ("; ".join(t["title"] for t in gen["items"]) or "none")
    if gen.get("in_history"):
        text += f"; {gen['in_history']} title(s) the user already rated (never recommended again)"
    if gen["ungrounded"]:
        text += f"; not in the catalog (hallucinated): {'; '.join(map(str, gen['ungrounded']))}"
    return text


def example_html(example: dict) -> str:
    target = {t["item"] for t in example["target"]}
    parts = [f"<p>{_esc(sentence(example['chosen']))}: user {example['user']}, {example['history_length']} movies rated. The five latest: "
             + "; ".join(_esc(t["title"]) for t in example["recent"]) + ". Held out (the movie to predict): <b>"
             + "; ".join(_esc(t["title"]) for t in example["target"]) + "</b>.</p><div class=cols>"]
    for label, items in example["lists"].items():
        lis = "".join(f"<li{' class=hit' if t['item'] in target else ''}>{_esc(t['title'])}</li>" for t in items)
        parts.append(f"<div><h4>{_esc(label)}</h4><ol>{lis}</ol></div>")
    parts.append("</div>")
    gen = example.get("generate")
    if gen:
        parts.append(f"<h4>The LLM's own answer (the paper's generate path)</h4><p>Stage 1's pick in the prompt: "
                     f"{_esc(gen['lstm_title'])}.</p><pre>{_esc((gen['answer'] or '(no answer)').strip())}</pre>"
                     f"<p>{_esc(sentence(grounded_text(gen)))}.</p>")
    return "\n".join(parts)


def render(summary: dict, curves_png: bytes | None) -> str:
    curve = (f"<h2>Stage 1 training</h2><img alt='training curves' src='{data_uri_png(curves_png)}'>"
             if curves_png else "")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>dualrec: the main job</title><style>{STYLE}</style></head><body>
<h1>DUALRec end to end</h1>
<p>Stage 1, a multimodal LSTM, ranks the catalog; the LLM stage re-scores its top candidates with the embedded
language model (and SBERT), the weights chosen on validation users; MostPop recommends the most-rated movies to
everyone. Every row is scored by the same evaluator on the same users.</p>
<h2>Metrics</h2>
{metrics_table(summary)}
<h2>Hit rate at k</h2><img alt='hit rate at k' src='{data_uri_png(hit_rate_plot(summary["rows"]))}'>
{curve}
<h2>One user</h2>
{example_html(summary["example"])}
<p>Every number's full record (config, data fingerprint, counts, timings) is in <code>results.json</code> beside
this page. Ran in {summary['seconds']:.0f} s.</p>
</body></html>
"""


def write_report(summary: dict, path: str | Path, curves: str | Path | None = None) -> Path:
    curves = Path(curves) if curves else None
    png = curves.read_bytes() if curves is not None and curves.exists() else None
    Path(path).write_text(render(summary, png), encoding="utf-8")
    return Path(path)
