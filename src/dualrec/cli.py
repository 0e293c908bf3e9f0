"""The ``dualrec`` command. Every sub-command is a thin call into the library. A command's body imports the part of
the library it runs (torch, Lightning, the evaluator): that is this module's one lazy boundary, so that
``dualrec --help`` and a mistyped option answer at once instead of after loading the whole stack."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
import yaml

from dualrec.config import DataConfig, ExperimentConfig

app = typer.Typer(help="Hybrid sequential + LLM recommendation (DUALRec, DUIP): data, training, evaluation, "
                       "serving.", no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Download and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
table_app = typer.Typer(help="The DUALRec and ranker tables: run their rows into result records, and render "
                             "docs/results.md from the committed records.", no_args_is_help=True)
app.add_typer(table_app, name="table")

ConfigOpt = typer.Option(None, "--config", "-c", help="Experiment YAML (configs/*.yaml).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value, e.g. --set model.epochs=2 (repeatable).")
DataDirOpt = typer.Option(None, "--data-dir", help="Dataset folder root (else $DUALREC_DATA_DIR, else user cache).")
RatingsOpt = typer.Option(None, "--ratings", help="An ML-1M ratings.dat lying elsewhere (e.g. a partial copy).")


def _config(config: Optional[Path], overrides: Optional[list[str]], **fields):
    extra = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in fields.items() if v is not None]
    return ExperimentConfig.load(config, list(overrides or []) + extra)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@data_app.command("download")
def data_download(name: str = typer.Argument(..., help="ml-1m or ml-100k"), data_dir: Optional[Path] = DataDirOpt):
    """Fetch the official GroupLens zip, check its MD5 and unpack it.

    Example: dualrec data download ml-1m --data-dir ~/data
    """
    from dualrec.data.movielens import download

    try:
        path = download(name, data_dir)
    except Exception as exc:  # network, checksum, unknown name: one clear line
        _fail(str(exc))
    typer.echo(f"{name} ready in {path}")


@data_app.command("info")
def data_info(name: str = typer.Argument("ml-1m", help="ml-1m, ml-100k or an interactions CSV/Parquet"),
              data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
              items: Optional[Path] = typer.Option(None, help="Items file for a generic interactions file."),
              top_items: Optional[int] = typer.Option(None, help="Keep the N most-rated items, as DUALRec does."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Counts, filters, fingerprint and every skipped line of a dataset.

    Example: dualrec data info ml-1m --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --top-items 1000
    """
    from dualrec.data.movielens import load

    try:
        ds = load(name, data_dir, ratings=ratings, items=items).top_items(top_items)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    info = ds.info()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    for r in ds.reports:
        typer.echo(r.summary())
    for key in ("users", "items_rated", "catalog_items", "interactions", "per_user", "filters", "fingerprint"):
        typer.echo(f"{key}: {info[key]}")


@app.command()
def ground(name: str = typer.Argument("ml-1m", help="ml-1m, ml-100k or an interactions CSV/Parquet"),
           data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
           items: Optional[Path] = typer.Option(None, help="Items file for a generic interactions file."),
           top_items: int = typer.Option(1000, help="Ground against the N most-rated items, as the experiments "
                                                    "do (0: the whole catalog)."),
           config: Optional[Path] = typer.Option(None, "--config", "-c", help="Take the catalog from a run's "
                                                                             "experiment.yaml (its data section "
                                                                             "and protocol) instead."),
           min_score: float = typer.Option(80.0, help="Least fuzzy score accepted (0..100)."),
           truncated: bool = typer.Option(False, help="The answers were cut by the token limit: ignore an "
                                                      "unfinished last line, as the DUALRec pipeline does."),
           summary: bool = typer.Option(False, help="Also print titles, ungrounded, ambiguous and the "
                                                    "hallucination rate to stderr.")):
    """Ground LLM answers: stdin holds one JSON string per line (an answer, newlines inside allowed; null for no
    answer); stdout gets one JSON object per line, {"titles": [{"text", "item", "title", "score", "why"}]}, item null
    when no catalog film is named and why the rule that decided.

    Examples: echo '"1. Toy Story 4\\n2. The Matrix"' | dualrec ground --data-dir ../shared/data
    --ratings ../shared/data/ml-1m-ratings-head/ratings.dat ml-1m; re-ground a DUALRec run's answers (the
    ``llm_text`` that ``dualrec predict`` writes): jq -c '.extras.llm_text' preds.jsonl | dualrec ground
    -c RUN/experiment.yaml --data-dir ../shared/data --ratings ... --summary
    """
    from dualrec import experiment as ex
    from dualrec.data.movielens import load
    from dualrec.llm.parse import extract_titles

    try:
        if config is not None:
            cfg = ex.run_config(config)
            cfg.data.data_dir = str(data_dir) if data_dir else cfg.data.data_dir
            cfg.data.ratings = str(ratings) if ratings else cfg.data.ratings
            catalog = ex.load_dataset(cfg).catalog
        else:
            catalog = load(name, data_dir, ratings=ratings, items=items).top_items(top_items or None).catalog
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    totals = {"answers": 0, "titles": 0, "ungrounded": 0, "ambiguous": 0}
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"stdin line {number}: not JSON ({exc.msg}); write each answer as one JSON string, e.g. "
                  f"\"1. Heat (1995)\\n2. Fargo\"")
        if answer is not None and not isinstance(answer, str):
            _fail(f"stdin line {number}: a JSON {type(answer).__name__}, expected a string (the answer) or null")
        grounded = catalog.ground_many(extract_titles(answer, truncated=truncated, catalog=catalog),
                                       min_score=min_score)
        totals["answers"] += 1
        totals["titles"] += len(grounded)
        totals["ambiguous"] += sum(g.ambiguous for g in grounded)
        totals["ungrounded"] += sum(g.item is None and not g.ambiguous for g in grounded)
        typer.echo(json.dumps({"titles": [g.to_dict() for g in grounded]}, ensure_ascii=False))
    if summary:
        rate = totals["ungrounded"] / totals["titles"] if totals["titles"] else 0.0
        typer.echo(json.dumps({**totals, "hallucination_rate": rate}), err=True)


@app.command()
def train(model: Optional[str] = typer.Argument(None, help="Model name, e.g. lstm or duip (overrides the config's "
                                                            "model.name)."),
          config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = SetOpt,
          protocol: Optional[str] = typer.Option(None, help="strict | paper | chrono"),
          data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
          devices: Optional[int] = typer.Option(None, help="Processes (CPU) or GPUs for a neural model "
                                                           "(model.devices)."),
          strategy: Optional[str] = typer.Option(None, help="Lightning strategy for several devices, e.g. ddp "
                                                            "(model.strategy)."),
          out: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="Run folder (resumes if it has a "
                                                                            "checkpoint).")):
    """Train a model on a protocol's training split and save it (safetensors + config) in a run folder.

    Example: dualrec train lstm -c configs/lstm.yaml --ratings ../shared/data/ml-1m-ratings-head/ratings.dat
    --data-dir ../shared/data --protocol strict --out runs/lstm-strict (add --devices 2 --strategy ddp for two
    processes; the same command again resumes from the run's last checkpoint)
    """
    from dualrec import experiment as ex

    cfg = _config(config, overrides, **{"model.name": model, "evaluation.protocol": protocol,
                                        "data.data_dir": str(data_dir) if data_dir else None,
                                        "data.ratings": str(ratings) if ratings else None,
                                        "model.devices": devices, "model.strategy": strategy})
    try:
        prepared = ex.prepare(cfg)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"data {prepared.dataset.name}: {len(prepared.dataset.interactions):,} interactions, "
               f"{len(prepared.dataset.catalog):,} items; split {cfg.evaluation.protocol}: {prepared.split.counts}")
    m = ex.fit(cfg, prepared, out)
    if not m.is_global_zero:   # another process of a multi-process fit: rank 0 writes the run
        return
    if m.history:
        from dualrec.models.neural import training_curves

        (out / "history.json").write_text(json.dumps(m.history, indent=1))
        training_curves(m.history, out / "training_curves.png", paper=PAPER_LSTM if m.name == "lstm" else None)
    typer.echo(f"saved {m.name} to {out / 'model'} (fit {m.fit_seconds:.1f}s)")


# DUALRec paper, section 6.1: final-epoch LSTM figures.
PAPER_LSTM = {"train_loss": 4.80, "val_loss": 5.04, "train_top1": 0.0414, "val_top1": 0.0344,
              "train_top5": 0.1664, "val_top5": 0.1420}


@app.command()
def evaluate(run: Optional[Path] = typer.Option(None, help="Run folder written by `dualrec train`."),
             config: Optional[Path] = ConfigOpt, overrides: Optional[list[str]] = SetOpt,
             model: Optional[str] = typer.Option(None, help="Fit this model now instead of loading a run."),
             protocol: Optional[str] = typer.Option(None, help="strict | paper | chrono (must match the run's)."),
             split: str = typer.Option("test", help="test or valid"),
             data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write result JSON + Markdown "
                                                                          "(default: the run folder)."),
             record: Optional[Path] = typer.Option(None, "--record", help="Refresh this result record instead: "
                                                                          "re-score --run's model (or a fusion "
                                                                          "record's own config and weights) on the "
                                                                          "record's users and add the metrics it "
                                                                          "lacks; no refit.")):
    """Score a trained run (or fit-and-score a config) under a protocol; writes JSON + a Markdown table.

    Examples: dualrec evaluate --run runs/lstm-strict --protocol strict;
    dualrec evaluate --model mostpop --protocol paper --ratings ... --data-dir ... --out results/mostpop;
    add the beyond-accuracy metrics to a record: dualrec evaluate --run runs/lstm-strict --record results/strict/lstm.json
    """
    from dualrec import experiment as ex

    if record is not None:
        try:
            refreshed = ex.refresh_record(record, run, data_dir, ratings)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        added = refreshed["refreshed"]["added"]
        typer.echo(f"{record}: accuracy as recorded; added " + ", ".join(
            f"{m}={refreshed['metrics'][m]:.4f}" for m in added))
        return

    if run is not None:
        cfg, m = ex.load_run(run, data_dir, ratings)
        if protocol and protocol != cfg.evaluation.protocol:
            _fail(f"{run} was trained under protocol {cfg.evaluation.protocol!r}; evaluating it under {protocol!r} "
                  f"would score users it trained on. Train a run with --protocol {protocol}.")
    else:
        cfg = _config(config, overrides, **{"model.name": model, "evaluation.protocol": protocol,
                                            "data.data_dir": str(data_dir) if data_dir else None,
                                            "data.ratings": str(ratings) if ratings else None})
        m = None
    try:
        prepared = ex.prepare(cfg)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if m is None:
        m = ex.fit(cfg, prepared, out)
        if not m.is_global_zero:   # another process of a multi-process fit: rank 0 evaluates
            return
    result = ex.run_evaluation(cfg, m, prepared, split)
    record = ex.result_record(cfg, m, prepared, result, split)
    path = ex.write_result(record, out or run or Path("results") / m.name)
    from dualrec.evaluation.report import markdown_table

    typer.echo(markdown_table([record]))
    stages = {k: v for k, v in result.timings.items() if k.startswith("stage_")}
    if stages:
        typer.echo("per-stage seconds per user: " + ", ".join(f"{k[6:-11]}={v:.4f}" for k, v in stages.items()))
    typer.echo(f"wrote {path}")


@app.command()
def predict(run: Path = typer.Option(..., help="Run folder written by `dualrec train`."),
            split: str = typer.Option("test", help="test or valid"), k: int = typer.Option(20, help="List length."),
            out: Path = typer.Option(Path("preds.jsonl"), help="JSON lines output."),
            data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """Write one JSON line per held-out user: user, history, target, items, scores (original MovieLens ids).

    Example: dualrec predict --run runs/lstm-strict --split test --k 20 --out preds.jsonl
    """
    from dualrec import experiment as ex
    from dualrec.evaluation.evaluator import recommend_in_batches

    cfg, m = ex.load_run(run, data_dir, ratings)
    prepared = ex.prepare(cfg)
    cases = prepared.split.test if split == "test" else prepared.split.valid
    recs = recommend_in_batches(m, cases.histories, k, cfg.evaluation.batch_size)
    with out.open("w") as fh:
        for i in range(len(cases)):
            row = {"user": int(cases.users[i]), "history": cases.histories[i].tolist(),
                   "target": cases.targets[i].tolist(), "items": recs.items[i].tolist(),
                   "scores": [round(float(s), 6) for s in recs.scores[i]]}
            if recs.extras is not None:
                row["extras"] = recs.extras[i]
            fh.write(json.dumps(row) + "\n")
    typer.echo(f"wrote {len(cases)} users to {out}")


@app.command()
def recommend(run: Path = typer.Option(..., help="Run folder written by `dualrec train`."),
              user: Optional[int] = typer.Option(None, help="A user id of the run's dataset (their full history)."),
              history: Optional[str] = typer.Option(None, help="Comma-separated item ids, oldest first."),
              k: int = typer.Option(10), data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """Print recommendations with titles, years, genres and scores.

    Examples: dualrec recommend --run runs/lstm-strict --user 42; dualrec recommend --run runs/lstm-strict
    --history 1193,661,914
    """
    from dualrec import experiment as ex

    cfg, m = ex.load_run(run, data_dir, ratings)
    if (user is None) == (history is None):
        _fail("give exactly one of --user or --history")
    if history is not None:
        try:
            hist = np.array([int(x) for x in history.split(",") if x.strip()], dtype=np.int64)
        except ValueError:
            _fail(f"--history must be comma-separated integer item ids, got {history!r}")
        unknown = hist[~m.catalog.has(hist)]
        if len(unknown):
            _fail(f"item id(s) not in the model's catalog: {unknown.tolist()}")
    else:
        seqs = ex.load_dataset(cfg).sequences()
        where = np.flatnonzero(seqs.users == user)
        if not len(where):
            _fail(f"user {user} not in dataset {cfg.data.name}")
        hist = seqs[where[0]]
    recs = m.recommend([hist], k)
    typer.echo("recent history: " + "; ".join(m.catalog.titles(hist[-5:])))
    for rank, (item, score) in enumerate(zip(recs.items[0], recs.scores[0]), 1):
        d = m.catalog.describe(item)
        typer.echo(f"{rank:>2}. {d['title']}  [{', '.join(d['genres'])}]  id={item}  score={score:.4f}")
    if recs.extras and recs.extras[0]:
        typer.echo(json.dumps(recs.extras[0], indent=1, default=str))


@app.command()
def serve(model: Optional[Path] = typer.Option(None, "--model", help="Run folder of the ranker / fallback (e.g. the "
                                                                     "LSTM); default: the DUALRec run's Stage 1."),
          dualrec: Optional[Path] = typer.Option(None, "--dualrec", help="Run folder of a DUALRec model (enables "
                                                                          "model=dualrec)."),
          db: str = typer.Option("dualrec-events.db", "--db", envvar="DUALREC_DB",
                                 help="SQLite file (created on first start) or postgresql://user@host:port/db."),
          host: str = typer.Option("127.0.0.1", help="Address to bind; beyond loopback it needs API keys."),
          port: int = typer.Option(8000),
          workers: int = typer.Option(1, help="uvicorn worker processes (use PostgreSQL for several)."),
          api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="Lines `KEY SCOPE[,SCOPE...]` "
                                                      "(scopes: recommend, events:read, events:write, admin); also "
                                                      "$DUALREC_API_KEYS. Without keys every route is open."),
          allowed_hosts: str = typer.Option("127.0.0.1,localhost,::1", help="Host header values served, comma-"
                                                                             "separated ('*': any)."),
          llm_budget: float = typer.Option(5.0, help="Seconds DUALRec may take per request before the LSTM answers."),
          max_batch: int = typer.Option(32, help="Most requests one model call answers."),
          llm_max_batch: int = typer.Option(1, help="Most requests one DUALRec call answers (raise it for an LLM "
                                                    "backend that batches generation)."),
          batch_wait_ms: float = typer.Option(5.0, help="Under load only: how long a batch that already has company "
                                                        "waits for more (a lone request never waits)."),
          torch_threads: int = typer.Option(1, help="torch intra-op threads per server process (0: torch's "
                                                    "default)."),
          max_k: int = typer.Option(100), max_history: int = typer.Option(500),
          max_body: int = typer.Option(65536, help="Largest request body in bytes."),
          rate: float = typer.Option(50.0, help="Requests per second per client (0: no limit)."),
          burst: int = typer.Option(100, help="Requests a client may send at once.")):
    """Serve recommendations over HTTP: events in, recommendations out (OpenAPI at /docs, web page at /).

    Example: dualrec serve --model runs/lstm-strict --db events.db --port 8000
    """
    from dualrec.serve.auth import AuthConfigError
    from dualrec.serve.deployment import ModelLoadError
    from dualrec.serve.limits import Limits
    from dualrec.serve.server import serve as run_server
    from dualrec.serve.settings import ServeSettings

    if model is None and dualrec is None:
        _fail("give --model RUN (an LSTM or any ranker) and/or --dualrec RUN")
    settings = ServeSettings(model=str(model) if model else None, dualrec=str(dualrec) if dualrec else None, db=db,
                             llm_budget_s=llm_budget, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                             torch_threads=torch_threads, llm_max_batch=llm_max_batch,
                             api_key_file=str(api_key_file) if api_key_file else None,
                             allowed_hosts=tuple(h.strip() for h in allowed_hosts.split(",") if h.strip()),
                             limits=Limits(max_history=max_history, max_k=max_k, max_body_bytes=max_body,
                                           rate_per_s=rate, rate_burst=burst))
    try:
        run_server(settings, host=host, port=port, workers=workers)
    except (AuthConfigError, ModelLoadError) as exc:
        _fail(str(exc))


@app.command()
def benchmark(config: Path = typer.Option(Path("configs/paper-table.yaml"), "--config", "-c",
                                          help="Benchmark YAML: models, protocols, data, metrics."),
              models: Optional[str] = typer.Option(None, help="Comma-separated subset of the config's models."),
              protocols: Optional[str] = typer.Option(None, help="Comma-separated subset of the config's protocols."),
              quick: bool = typer.Option(False, "--quick", help="Every model on a small sample (smoke test)."),
              force: bool = typer.Option(False, "--force", help="Re-run models whose result JSON exists."),
              render_only: bool = typer.Option(False, "--render-only", help="Run nothing: print the table of the "
                                                                             "records already under --out (the docs' "
                                                                             "copy: `dualrec table render`)."),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: the config's)."),
              data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """Train and evaluate every listed model under the strict and paper protocols: JSON, Markdown, PNG.

    Example: dualrec benchmark -c configs/paper-table.yaml --ratings ../shared/data/ml-1m-ratings-head/ratings.dat
    --data-dir ../shared/data --models mostpop,sknn --quick
    """
    from dualrec.benchmark import BenchmarkConfig, render_records, run_benchmark

    try:
        cfg = BenchmarkConfig.load(config).select([m.strip() for m in models.split(",")] if models else None)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    data = dataclasses.replace(cfg.data, **{k: str(v) for k, v in (("data_dir", data_dir), ("ratings", ratings))
                                            if v is not None})
    cfg = dataclasses.replace(cfg, data=data, out=str(out) if out else cfg.out + ("-quick" if quick else ""),
                              protocols=[p.strip() for p in protocols.split(",")] if protocols else cfg.protocols)
    if render_only:
        blocks = render_records(cfg)
        for protocol, table in blocks.items():
            typer.echo(f"{protocol}:\n{table}")
        return
    try:
        records = run_benchmark(cfg, quick=quick, force=force)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo((Path(cfg.out) / "paper-table.md").read_text())
    typer.echo(f"wrote {sum(len(r) for r in records.values())} results, tables and charts under {cfg.out}")


@app.command()
def finetune(stage1: Path = typer.Option(..., help="Stage-1 run folder from `dualrec train` (its data and protocol "
                                                   "are used; the LSTM's top-1 goes into every prompt)."),
             base_model: str = typer.Option("embedded", help="'embedded' (Gemma 3 270M from PyPI), a hub id such as "
                                                             "mistralai/Mistral-7B-Instruct-v0.3, or a local folder."),
             out: Path = typer.Option(Path("models/lora-embedded"), "--out", "-o", help="Adapter folder (resumes "
                                                                                       "if it holds a checkpoint)."),
             max_users: Optional[int] = typer.Option(None, help="Seeded sample of training users (small CPU runs)."),
             epochs: int = typer.Option(3), batch_size: int = typer.Option(2), grad_accum: int = typer.Option(4),
             lr: float = typer.Option(2e-4), max_length: int = typer.Option(512),
             max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
             dtype: str = typer.Option("auto", help="auto (bf16 where the CPU or GPU has it natively; else "
                                                    "fp32 on CPU, fp16 on GPU), float32, bfloat16, float16."),
             device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
             lora: Optional[list[str]] = typer.Option(None, "--lora", help="Any other FinetuneConfig option, "
                                                                         "KEY=VALUE (e.g. --lora r=16)."),
             task: str = typer.Option("generate", help="generate: the paper's instruction data (answer titles); "
                                                       "rank: the verbalizer ranker over Stage 1's top 20 "
                                                       "(dualrec.llm.ranker)."),
             positions: int = typer.Option(2, help="--task rank: last training prefixes per user to try."),
             data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """LoRA-tune an LLM on training users of the Stage-1 run; saves a peft adapter.

    Examples: dualrec finetune --stage1 runs/lstm-paper --max-users 200 --epochs 1 --out models/lora-embedded;
    the ranker: dualrec finetune --task rank --stage1 runs/lstm-strict --epochs 1 --out models/ranker-strict;
    on a GPU: dualrec finetune --stage1 runs/lstm-paper --base-model mistralai/Mistral-7B-Instruct-v0.3
    --dtype float16 --device cuda --lora gradient_checkpointing=true --out models/lora-mistral7b
    """
    from dualrec import experiment as ex
    from dualrec.llm.finetune import AnswerTask, FinetuneConfig, build_records, finetune as run_finetune, write_jsonl
    from dualrec.llm.ranker import RankerTask, ranker_examples

    cfg, stage1_model = ex.load_run(stage1, data_dir, ratings)
    options = {"base_model": base_model, "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum,
               "lr": lr, "max_length": max_length, "max_steps": max_steps, "dtype": dtype, "device": device,
               "seed": cfg.seed}
    for item in lora or []:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--lora {item!r} is not KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    try:
        ft_cfg = FinetuneConfig.from_dict(options)
        prepared = ex.prepare(cfg)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    if task == "rank":
        examples, counts = ranker_examples(stage1_model, prepared.split.train, prepared.dataset.catalog,
                                           positions=positions, max_users=max_users, seed=cfg.seed)
        write_jsonl([vars(e) for e in examples], out / "train.jsonl")
        objective = RankerTask(examples)
    elif task == "generate":
        examples, counts = build_records(stage1_model, prepared.split.train, prepared.dataset.catalog,
                                         max_users=max_users, seed=cfg.seed)
        write_jsonl(examples, out / "train.jsonl")
        objective = AnswerTask(examples)
    else:
        _fail(f"--task must be generate or rank, got {task!r}")
    (out / "examples.json").write_text(json.dumps({"task": task, "protocol": cfg.evaluation.protocol,
                                                   "stage1": str(stage1), **counts}, indent=1))
    typer.echo(f"{len(examples)} {task} examples from protocol {cfg.evaluation.protocol!r} training users "
               f"({counts}); wrote {out / 'train.jsonl'}")
    run_finetune(objective, ft_cfg, out)
    report = json.loads((out / "finetune.json").read_text())
    typer.echo(f"saved adapter to {out}: {report['steps']} steps, loss {report['losses'][0]:.3f} -> "
               f"{report['losses'][-1]:.3f}, {report['s_per_step']:.1f} s/step on {report['device']}")


@app.command()
def quickstart(out: Path = typer.Option(Path("runs/main"), "--out", "-o", help="Run folder: results.json, "
                                                                           "results.md, report.html, lstm/, fusion/."),
               epochs: int = typer.Option(3, help="Stage-1 LSTM epochs (every position a target)."),
               test_users: int = typer.Option(300, help="Seeded sample of test users every row is scored on."),
               valid_users: int = typer.Option(200, help="Validation users the fusion weights are chosen on."),
               signals: str = typer.Option("llm,sbert", help="LLM-stage signals over Stage 1's top 20: llm "
                                                             "(the embedded verbalizer ranker), sbert."),
               max_windows: Optional[int] = typer.Option(None, help="Stage-1 training rows (smoke runs)."),
               generate_example: bool = typer.Option(True, help="Show the paper's generate path (the LLM's "
                                                                "answer, grounded) on the example user."),
               protocol: str = typer.Option("strict", help="strict | paper | chrono"),
               data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """The main job: the DUALRec pipeline end to end in minutes (a small Stage-1 LSTM, the LLM stage on the
    embedded model for a sample of users, MostPop), one evaluator, a table, one user, and report.html.

    Example: dualrec quickstart --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --data-dir ../shared/data
    --out runs/main
    """
    from dualrec.quickstart import QuickstartConfig, example_text, run_quickstart, text_table

    cfg = QuickstartConfig(data=DataConfig(data_dir=str(data_dir) if data_dir else None,
                                           ratings=str(ratings) if ratings else None),
                           protocol=protocol, epochs=epochs, max_windows=max_windows, valid_users=valid_users,
                           test_users=test_users, signals=[s.strip() for s in signals.split(",") if s.strip()],
                           generate_example=generate_example)
    try:
        summary = run_quickstart(cfg, out)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo("\n" + text_table(summary) + "\n")
    typer.echo(example_text(summary["example"]) + "\n")
    typer.echo(f"full report: {out / 'report.html'} (open it in a browser); every number's record: "
               f"{out / 'results.json'}; finished in {summary['seconds']:.0f} s")


@app.command()
def tradeoff(run: Optional[list[Path]] = typer.Option(None, "--run", help="Run folder (repeat; the first is the "
                                                                          "reference, e.g. Stage 1)."),
             label: Optional[list[str]] = typer.Option(None, "--label", help="A label per run, in order."),
             lambdas: str = typer.Option("1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,0",
                                         help="MMR lambdas (1 = the model's own ranking)."),
             n_candidates: int = typer.Option(20, help="Each model's top N that MMR re-orders (20: the DUALRec "
                                                       "hybrid's candidates; past them its scores are only Stage "
                                                       "1's order)."),
             similarity: str = typer.Option("genre", help="MMR's item similarity: genre or title (SBERT)."),
             max_users: Optional[int] = typer.Option(None, help="Score the first N test users only (labelled)."),
             out: Path = typer.Option(Path("results/strict/tradeoff.json"), "--out", "-o", help="The record."),
             plot: Optional[Path] = typer.Option(None, help="PNG plot (default: beside the record)."),
             render_only: bool = typer.Option(False, "--render-only", help="Re-draw the plot and print the table "
                                                                            "from --out (the docs' copy: `dualrec "
                                                                            "table render`)."),
             data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt):
    """NDCG@10 against intra-list diversity and catalog coverage as MMR's lambda moves, for several models on the
    same users: a record, a PNG plot and a Markdown table, with each model's points tested against the first run's
    frontier by the paired bootstrap.

    Example: dualrec tradeoff --run runs/lstm-all-strict --run runs/fpmc-strict --run runs/fusion-sbert-strict
    --data-dir ../shared/data --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --out results/strict/tradeoff.json
    """
    from dualrec.tradeoff import TradeoffConfig, markdown, parse_lambdas, run_tradeoff, write_outputs

    plot = plot or out.with_suffix(".png")
    try:
        if render_only:
            record = json.loads(out.read_text())
        else:
            cfg = TradeoffConfig(runs=[str(r) for r in run or []], labels=list(label or []),
                                 lambdas=parse_lambdas(lambdas), n_candidates=n_candidates, similarity=similarity,
                                 max_users=max_users)
            record = run_tradeoff(cfg, data_dir, ratings)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    write_outputs(record, out, plot)
    typer.echo(markdown(record))
    typer.echo(f"wrote {out} and {plot}")


@app.command()
def compare(a: Path = typer.Argument(..., help="Predictions (`dualrec predict`) or a result record of model A."),
            b: Path = typer.Argument(..., help="The same for model B (the baseline), on the same users."),
            metrics: str = typer.Option("NDCG@10,HR@10", help="Comma-separated HR@k / NDCG@k."),
            resamples: int = typer.Option(1000),
            seed: int = typer.Option(42, help="Resampling seed (the result records use 42).")):
    """Paired-bootstrap 95 % interval of metric(A) - metric(B) over the users both files score.

    Example: dualrec compare results/strict/fusion-sbert.json results/strict/lstm.json
    """
    from dualrec.evaluation.bootstrap import paired_bootstrap
    from dualrec.evaluation.compare import load_ranks

    try:
        ra, rb = load_ranks(a), load_ranks(b)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    common = sorted(set(ra) & set(rb))
    if not common:
        _fail(f"{a} and {b} share no user")
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    try:
        ci = paired_bootstrap(np.array([ra[u] for u in common]), np.array([rb[u] for u in common]), names,
                              resamples, seed=seed)
    except ValueError as exc:
        _fail(str(exc))
    only = len(set(ra) ^ set(rb))
    typer.echo(f"{len(common)} users in both" + (f" ({only} in one file only, left out)" if only else "")
               + f"; {resamples} paired resamples")
    for m in names:
        lo, hi = ci[f"delta_{m}"]
        verdict = "A better" if lo > 0 else "B better" if hi < 0 else "no difference shown"
        typer.echo(f"delta {m} (A - B): {ci['delta'][m]:+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}]: {verdict}")


@table_app.command("run")
def table_run(protocol: str = typer.Option("paper", help="paper | strict"),
              stage1: Path = typer.Option(..., help="Stage-1 model folder trained under --protocol "
                                                    "(e.g. runs/lstm-paper/model)."),
              adapter: Optional[Path] = typer.Option(None, help="peft adapter for the LoRA rows (skipped without)."),
              rows: Optional[str] = typer.Option(None, help="Comma-separated row keys (default: every row of the "
                                                            "protocol; see dualrec.rows.ROWS)."),
              max_users: Optional[list[str]] = typer.Option(None, "--max-users",
                                                            help="ROW=N: score that row on the first N test users."),
              overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="KEY=VALUE for every LLM row, "
                                                            "e.g. model.backend.model_name=Qwen/Qwen2.5-1.5B "
                                                            "(then give --out a folder of its own)."),
              data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
              out: Path = typer.Option(Path("results/dualrec"), help="Records go to OUT/PROTOCOL/ROW.json.")):
    """Fit and score table rows; each writes its result record (nothing is rendered: see `dualrec table render`).

    Example: dualrec table run --protocol strict --stage1 runs/lstm-strict/model --rows lstm,dualrec-rank-sbert
    --out results --data-dir ../shared/data --ratings ../shared/data/ml-1m-ratings-head/ratings.dat
    """
    from dualrec.rows import ROWS, run_rows

    known = {r.key for r in ROWS}
    wanted = set(rows.split(",")) if rows else None
    if wanted and wanted - known:
        _fail(f"unknown row(s) {sorted(wanted - known)}; rows: {', '.join(sorted(known))}")
    try:
        limits = {k: int(v) for k, v in (item.split("=", 1) for item in max_users or [])}
    except ValueError:
        _fail(f"--max-users takes ROW=N, got {max_users}")
    data = {"data_dir": str(data_dir) if data_dir else None, "ratings": str(ratings) if ratings else None}
    run_rows(protocol, str(stage1), str(adapter) if adapter else None, wanted, limits, data, out,
             tuple(overrides or ()))


@table_app.command("duip")
def table_duip(protocol: str = typer.Option(..., help="chrono | strict"),
               stage1: Path = typer.Option(..., help="The Stage-1 LSTM run folder of this protocol (runs/<x>)."),
               duip: Optional[list[str]] = typer.Option(None, "--duip", help="KEY=RUN: a DUIP run folder and its "
                                                        "row (repeatable)."),
               max_users: Optional[list[str]] = typer.Option(None, "--max-users", help="KEY=N: that row on the "
                                                             "first N test cases only (its label says so)."),
               data_dir: Optional[Path] = DataDirOpt, ratings: Optional[Path] = RatingsOpt,
               out: Path = typer.Option(Path("results"), help="Records go to OUT/PROTOCOL/ROW.json.")):
    """Score MostPop, the Stage-1 LSTM and DUIP runs on every test case into records (docs/results.md, section
    duip, and the verdict of docs/duip.md are rendered from them by `dualrec table render`).

    Example: dualrec table duip --protocol chrono --stage1 runs/lstm-all-chrono --duip duip=runs/duip-chrono
    """
    from dualrec.duip_rows import PROTOCOLS, run_table

    if protocol not in PROTOCOLS:
        _fail(f"--protocol must be one of {PROTOCOLS}, got {protocol!r}")
    try:
        runs = {k: Path(v) for k, v in (item.split("=", 1) for item in duip or [])}
        caps = {k: int(v) for k, v in (item.split("=", 1) for item in max_users or [])}
    except ValueError:
        _fail("--duip takes KEY=RUN and --max-users KEY=N")
    if set(caps) - set(runs):
        _fail(f"--max-users names rows that are not given with --duip: {sorted(set(caps) - set(runs))}")
    try:
        run_table(protocol, stage1, runs, caps, str(data_dir) if data_dir else None,
                  str(ratings) if ratings else None, out)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


@table_app.command("render")
def table_render(section: Optional[list[str]] = typer.Option(None, "--section", help="A generated docs section "
                                                             "(repeatable; default: every one)."),
                 protocol: Optional[str] = typer.Option(None, help="Only this protocol's tables."),
                 root: Path = typer.Option(Path("."), help="The repository root: records and pages are under it."),
                 docs: Optional[Path] = typer.Option(None, help="Write docs/results.md's sections into this page "
                                                                "instead."),
                 check: bool = typer.Option(False, help="Write nothing; fail (exit 2) if a page differs from its "
                                                        "records.")):
    """Render the docs' generated tables (docs/results.md, docs/duip.md) from the committed result records; the
    text around them stays.

    Example: dualrec table render --section ranker
    """
    from dualrec.tables.docs import RESULTS_PAGE, pages, render_docs

    try:
        chosen = pages(section)
        for page in chosen:
            path = docs if docs is not None and page == RESULTS_PAGE else root / page
            if not path.exists():
                _fail(f"{path}: no such page")
            before = path.read_text()
            after = render_docs(root, before, section, protocol, page)
            if check and after != before:
                _fail(f"{path} differs from its records: run `dualrec table render` and commit the page")
            if not check:
                path.write_text(after)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(("pages match their records: " if check else "rendered from the records: ") + ", ".join(chosen))


if __name__ == "__main__":
    app()
