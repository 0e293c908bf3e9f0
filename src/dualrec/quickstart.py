"""The main job: the whole DUALRec pipeline end to end, small enough to watch.

Stage 1 (the multimodal LSTM, every position a target, a few epochs) is trained on the strict protocol's training
side; the LLM stage re-scores Stage 1's top candidates with the embedded Gemma 3 270M verbalizer ranker and SBERT
(:mod:`dualrec.models.fusion`), fusion weights chosen on a fixed sample of validation users; MostPop is the floor.
All rows are scored by the one evaluator on the same fixed sample of test users, the fused row against Stage 1
with a paired-bootstrap interval, and one user is shown with titles, including the paper's generate path
(prompt -> generated answer -> grounded catalog items) for that one user.

The run folder gets ``results.json`` (every row's full result record, the sample, the interval, the example),
``results.md``, ``report.html`` (self-contained: images are data URIs), ``lstm/`` (a run any other command can
load: ``dualrec recommend --run RUN/lstm --user N``) and ``fusion/`` (the fused model).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dualrec import experiment as ex
from dualrec.config import DataConfig, EvalConfig, ExperimentConfig
from dualrec.data.dataset import Dataset
from dualrec.evaluation.bootstrap import paired_bootstrap
from dualrec.evaluation.evaluator import EvalResult, evaluate
from dualrec.evaluation.metrics import MISS
from dualrec.evaluation.protocols import EvalCases, get_protocol
from dualrec.models import Recommender, build_model
from dualrec.models.neural import training_curves
from dualrec.report import grounded_text, verdict, write_report


@dataclass
class QuickstartConfig:
    """What the main job runs; the defaults are the README's main command."""

    data: DataConfig = field(default_factory=DataConfig)
    protocol: str = "strict"
    epochs: int = 3                     # Stage-1 epochs (every position a target: a few suffice)
    max_windows: int | None = None      # Stage-1 training rows (None: all; tests use a few)
    valid_users: int = 200              # validation users the fusion weights are chosen on
    test_users: int = 300               # test users every row is scored on
    signals: list[str] = field(default_factory=lambda: ["llm", "sbert"])
    n_candidates: int = 20
    llm_batch: int = 8
    generate_example: bool = True       # the paper's generate path on the example user (one LLM answer)
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    train_threads: int | None = 1       # torch threads while Stage 1 trains (None: torch's default); the small
    #                                     LSTM trains as fast on one as on two, and one never stalls on a core
    #                                     another process holds
    seed: int = 42
    progress: bool = True


def sample_cases(cases: EvalCases, n: int | None, seed: int) -> EvalCases:
    """A fixed, seeded sample of ``n`` cases in their original order (all of them when ``n`` covers them)."""
    if not n or n >= len(cases):
        return cases
    idx = np.sort(np.random.default_rng(seed).choice(len(cases), n, replace=False))
    return EvalCases(cases.users[idx], [cases.histories[i] for i in idx], [cases.targets[i] for i in idx])


def hit_rate_curve(ranks: np.ndarray, max_k: int) -> list[float]:
    """HR@k for k = 1..max_k from 0-based first-hit ranks (:data:`MISS` for none)."""
    ranks = np.asarray(ranks)
    hit = ranks != MISS
    return [float((hit & (ranks < k)).mean()) if len(ranks) else 0.0 for k in range(1, max_k + 1)]


def quiet_transformers() -> None:
    """No weight-loading bars or notices from transformers between the job's own progress bars."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _say(cfg: QuickstartConfig, text: str) -> None:
    if cfg.progress:
        tqdm.write(text)


def _experiment(cfg: QuickstartConfig, model: dict) -> ExperimentConfig:
    return ExperimentConfig(model=model, data=dataclasses.replace(cfg.data),
                            evaluation=EvalConfig(protocol=cfg.protocol, ks=list(cfg.ks), batch_size=256),
                            seed=cfg.seed)


def _row(label: str, exp: ExperimentConfig, model: Recommender, prepared: ex.Prepared, result: EvalResult,
         sample: dict) -> tuple[dict, np.ndarray]:
    record = ex.result_record(exp, model, prepared, result)
    record.update(label=label, sample=sample)
    record["hit_rate_curve"] = hit_rate_curve(result.ranks, max(exp.evaluation.ks))
    return record, result.ranks


def _describe(catalog, items) -> list[dict]:
    return [{"item": int(i), "title": catalog.describe(int(i))["title"]} for i in items]


def example_user(cfg: QuickstartConfig, prepared: ex.Prepared, cases: EvalCases, results: dict[str, EvalResult],
                 stage1_dir: Path) -> dict:
    """One test user: recent history, the held-out movie, each model's top 10 (titles) as evaluated, and the LLM's
    own answer on the paper's generate path, with the catalog items it grounds to."""
    catalog = prepared.dataset.catalog
    lists = {label: [items[:10] for items in res.recommendations.items] for label, res in results.items()}
    last = list(lists)[-1]
    hits = [i for i, (items, t) in enumerate(zip(lists[last], cases.targets)) if np.isin(t, items).any()]
    u = hits[0] if hits else 0
    hist, target = cases.histories[u], cases.targets[u]
    out = {"user": int(cases.users[u]), "history_length": int(len(hist)),
           "chosen": f"the first sampled user whose held-out movie is in the {last} top 10" if hits else
           "the first sampled user (no sampled user's held-out movie is in the last row's top 10)",
           "recent": _describe(catalog, hist[-5:]), "target": _describe(catalog, target),
           "lists": {label: _describe(catalog, items[u]) for label, items in lists.items()}}
    if cfg.generate_example:
        t = time.perf_counter()
        gen = build_model("dualrec", {"stage1": str(stage1_dir), "mode": "generate", "fallback": "none",
                                      "backend": {"kind": "hf", "model_name": "embedded", "dtype": "auto",
                                                  "batch_size": 1},
                                      "progress": False, "seed": cfg.seed})
        gen.fit(prepared.split.train, catalog)
        recs = gen.recommend([hist], 10)
        e = recs.extras[0]
        out["generate"] = {"answer": e.get("llm_text"), "lstm_title": e.get("lstm_title"),
                           "titles": e.get("titles", []), "items": _describe(catalog, recs.items[0]),
                           "ungrounded": e.get("ungrounded_titles", []), "in_history": e.get("in_history", 0),
                           "seconds": time.perf_counter() - t}
        gen.close()
    return out


def run_quickstart(cfg: QuickstartConfig, out: str | Path, dataset: Dataset | None = None) -> dict:
    """Train, re-rank, evaluate and report into ``out``; returns what ``results.json`` holds. ``dataset``: data
    already loaded (else ``cfg.data`` is read)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = tqdm(total=2, desc="data: load ML-1M, split", unit="step", disable=not cfg.progress, leave=False)
    lstm_exp = _experiment(cfg, {"name": "lstm", "targets": "all", "min_len": 1, "max_len": 30,
                                 "epochs": cfg.epochs, "batch_size": 128, "max_windows": cfg.max_windows,
                                 "progress": cfg.progress})
    dataset = dataset if dataset is not None else ex.load_dataset(lstm_exp)
    steps.update()
    prepared = ex.prepare(lstm_exp, dataset)
    steps.update()
    steps.close()
    split = prepared.split
    valid = sample_cases(split.valid, cfg.valid_users, cfg.seed)
    test = sample_cases(split.test, cfg.test_users, cfg.seed)
    sample = {"test_users": len(test), "of_test_users": len(split.test), "valid_users": len(valid),
              "seed": cfg.seed}
    _say(cfg, f"data: {len(dataset.interactions):,} ratings, {len(dataset.catalog):,} movies, "
              f"{len(split.test):,} users; scoring {len(test)} test users ({cfg.protocol} protocol)")

    # Stage 1: the LSTM, saved as an ordinary run folder
    _say(cfg, f"Stage 1: multimodal LSTM, every position a target, {cfg.epochs} epochs")
    lstm_dir = out / "lstm"
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.train_threads or threads)
    try:
        lstm = ex.fit(lstm_exp, prepared, lstm_dir)
    finally:
        torch.set_num_threads(threads)
    (lstm_dir / "history.json").write_text(json.dumps(lstm.history, indent=1))
    if lstm.history:
        training_curves(lstm.history, lstm_dir / "training_curves.png")

    records, ranks, results = [], {}, {}
    mp_exp = _experiment(cfg, {"name": "mostpop"})
    mostpop = build_model("mostpop", mp_exp.model_options()).fit(split.train, dataset.catalog)
    stats = ex.item_stats(lstm_exp, prepared)   # training popularity and title embeddings: beyond accuracy
    for label, exp, model in (("MostPop", mp_exp, mostpop), ("Stage 1 (LSTM)", lstm_exp, lstm)):
        res = evaluate(model, test, dataset.catalog, cfg.ks, 256, cfg.progress, stats)
        rec, ranks[label] = _row(label, exp, model, prepared, res, sample)
        records.append(rec)
        results[label] = res

    # the LLM stage: Stage 1's top K re-scored by the embedded LLM ranker (+ SBERT), weights chosen on validation
    signals = " + ".join("LLM ranker" if s == "llm" else "SBERT" for s in cfg.signals)
    fused_label = f"DUALRec: Stage 1 + {signals}"
    quiet_transformers()
    _say(cfg, f"LLM stage: Stage 1's top {cfg.n_candidates} re-scored by {signals}; weights chosen on "
              f"{len(valid)} validation users")
    fusion_exp = _experiment(cfg, {"name": "fusion", "stage1": str(lstm_dir / "model"), "signals": list(cfg.signals),
                                   "n_candidates": cfg.n_candidates, "batch_size": cfg.llm_batch,
                                   "progress": cfg.progress})
    fusion = build_model("fusion", fusion_exp.model_options())
    fusion.fit(split.train, dataset.catalog, valid=valid)
    fusion.save(out / "fusion" / "model")
    res = evaluate(fusion, test, dataset.catalog, cfg.ks, max(cfg.llm_batch, 8) * 4, cfg.progress, stats)
    rec, ranks[fused_label] = _row(fused_label, fusion_exp, fusion, prepared, res, sample)
    rec["weights"] = fusion.selection.get("weights")
    rec["weights_chosen_on"] = fusion.selection.get("chosen_on")
    records.append(rec)
    results[fused_label] = res
    bootstrap = paired_bootstrap(ranks[fused_label], ranks["Stage 1 (LSTM)"], ("NDCG@10", "HR@10"), 1000,
                                 seed=cfg.seed)

    _say(cfg, "example user: every model's list, and the LLM's own answer")
    example = example_user(cfg, prepared, test, results, lstm_dir / "model")
    summary = {
        "caption": caption(cfg.protocol, sample, len(dataset.catalog)),
        "protocol": cfg.protocol, "protocol_note": get_protocol(cfg.protocol).sample_note, "sample": sample,
        "rows": records, "bootstrap": {"a": fused_label, "b": "Stage 1 (LSTM)", **bootstrap},
        "example": example, "history": lstm.history, "seconds": time.perf_counter() - start,
        "config": dataclasses.asdict(cfg),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "results.md").write_text(text_table(summary) + "\n")
    write_report(summary, out / "report.html", lstm_dir / "training_curves.png")
    return summary


def caption(protocol: str, sample: dict, n_items: int) -> str:
    return (f"{sample['test_users']} of {sample['of_test_users']} test cases (seeded sample, seed {sample['seed']}), "
            f"{protocol} protocol: {get_protocol(protocol).sample_note}; {n_items} movies; fusion weights chosen on "
            f"{sample['valid_users']} validation cases")


TABLE_METRICS = ("HR@1", "HR@10", "NDCG@10", "coverage")


def text_table(summary: dict) -> str:
    """The printed table: one row per model, the caption above, the fused row's interval below."""
    label_w = max(len(r["label"]) for r in summary["rows"])
    head = f"{'model':<{label_w}}  " + "  ".join(f"{m:>8}" for m in TABLE_METRICS) + "  s/user"
    lines = [summary["caption"], "", head, "-" * len(head)]
    for r in summary["rows"]:
        cells = [f"{r['metrics'][m]:8.4f}" if m in r["metrics"] else f"{'-':>8}" for m in TABLE_METRICS]
        lines.append(f"{r['label']:<{label_w}}  " + "  ".join(cells) + f"  {r['timings']['s_per_user']:.4f}")
    b = summary["bootstrap"]
    lo, hi = b["delta_NDCG@10"]
    lines.append("")
    lines.append(f"{b['a']} - {b['b']}: NDCG@10 {b['delta']['NDCG@10']:+.4f}, 95 % paired-bootstrap interval "
                 f"[{lo:+.4f}, {hi:+.4f}] over {b['n_users']} users: {verdict(b)}")
    fused = summary["rows"][-1]
    if fused.get("weights"):
        lines.append("fusion weights: " + ", ".join(f"{k} {v:g}" for k, v in fused["weights"].items()))
    return "\n".join(lines)


def example_text(example: dict) -> str:
    """One user, in titles: recent history, the held-out movie, each list (the hit marked) and the LLM's answer."""
    target = {t["item"] for t in example["target"]}
    lines = [f"one user ({example['chosen']}): user {example['user']}, {example['history_length']} movies "
             f"rated; the five latest:"]
    lines += [f"  {t['title']}" for t in example["recent"]]
    lines.append("held out (the movie to predict): " + "; ".join(t["title"] for t in example["target"]))
    for label, items in example["lists"].items():
        lines.append(f"{label}, top 10:")
        lines += [f"  {n:>2}. {t['title']}" + ("   <- held-out movie" if t["item"] in target else "")
                  for n, t in enumerate(items, 1)]
    gen = example.get("generate")
    if gen:
        lines.append(f"LLM answer (paper's generate path; Stage 1's pick in the prompt: {gen['lstm_title']}):")
        lines += [f"  | {line}" for line in (gen["answer"] or "(no answer)").strip().splitlines()]
        lines.append(grounded_text(gen))
    return "\n".join(lines)

