"""Load benchmark of `dualrec serve` on loopback: throughput and p50/p95/p99 latency at 1, 8 and 32 clients.

The server runs as its own process (the real `dualrec serve` command, SQLite store, rate limit off); this process
seeds stored users with real ML-1M histories, then runs closed-loop clients (each sends its next request when the
previous answer arrives) against ``GET /users/{id}/recommendations`` for each model path, plus one row of event
writes. Every level is bounded by a request count *and* a time limit; nothing is asserted, figures are printed as a
Markdown table for results/benchmarks.md.

    python bench/bench_serve.py --ratings ../shared/data/ml-1m-ratings-head/ratings.dat --data-dir ../shared/data \
        [--model RUN] [--dualrec RUN | --embedded-dualrec] [--requests 400] [--seconds 30]

Without ``--model`` a Stage-1 LSTM of the paper's size is fitted on 2,000 windows for one epoch (inference cost does
not depend on how long it was trained). ``--dualrec`` (or ``--embedded-dualrec``: the LSTM + the packaged Gemma 3
270M through llama.cpp) adds the DUALRec path, under ``--llm-budget``; its fallbacks are counted.

Batching side by side (docs/service.md): ``--compare-batching SRC`` runs an earlier source tree's server (``SRC``,
e.g. ``git archive COMMIT src | tar -x -C /tmp/base`` then ``/tmp/base/src``), this tree's with ``--max-batch 1``
and this tree's adaptive batching (without and with its wait under load) in turn, on the same model, users and
client levels:

    python bench/bench_serve.py ... --model RUN --compare-batching /tmp/base/src --clients 1,64 --repeats 4 --wrk
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_quick_lstm(args, out: Path) -> Path:
    from dualrec.data import read_ml1m
    from dualrec.models import build_model

    ds = read_ml1m(Path(args.data_dir) / "ml-1m", ratings=args.ratings).top_items(1000)
    model = build_model("lstm", {"epochs": 1, "max_windows": 2000, "progress": False})
    model.fit(ds.sequences(), ds.catalog)
    return model.save(out / "model")


def embedded_dualrec(args, lstm_dir: Path, out: Path) -> Path:
    """A DUALRec run over the LSTM with the embedded Gemma 3 270M through llama.cpp; no response cache, so every
    request really runs the LLM."""
    from dualrec.data import read_ml1m
    from dualrec.models import build_model

    ds = read_ml1m(Path(args.data_dir) / "ml-1m", ratings=args.ratings).top_items(1000)
    model = build_model("dualrec", {"stage1": str(lstm_dir), "cache": False, "progress": False})
    model.fit(ds.sequences(), ds.catalog)  # loads Stage 1 from lstm_dir; nothing to train
    return model.save(out / "model")


def start_server(args, model: Path, db: Path, flags: list[str] | None = None,
                 src: str | None = None) -> tuple[subprocess.Popen, str]:
    """`dualrec serve` on a free port; ``flags`` replace the batching flags of ``args``; ``src`` runs another source
    tree's code (e.g. an earlier commit's ``src/``) with the same command."""
    port = free_port()
    batching = flags if flags is not None else ["--max-batch", str(args.max_batch), "--batch-wait-ms",
                                                str(args.batch_wait_ms)]
    cmd = [sys.executable, "-m", "dualrec.cli", "serve", "--model", str(model), "--db", str(db), "--port", str(port),
           "--rate", "0", *batching, "--llm-budget", str(args.llm_budget), "--llm-max-batch", str(args.llm_max_batch),
           "--torch-threads", str(args.torch_threads)]
    if args.dualrec:
        cmd += ["--dualrec", args.dualrec]
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(db.with_suffix(".log"), "w"), env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
        if proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"server did not start; see {db.with_suffix('.log')}")


def seed_users(url: str, seqs, n_users: int) -> list[str]:
    """30 real watch events for each of ``n_users`` stored users."""
    users = [f"user{u}" for u in range(n_users)]
    with httpx.Client(base_url=url, timeout=60) as c:
        for i, user in enumerate(users):
            events = [{"item": int(x), "timestamp": t} for t, x in enumerate(seqs[i][-30:])]
            c.post(f"/users/{user}/events", json={"events": events}).raise_for_status()
    return users


def recommendations_of(users: list[str], first: int, model_name: str = "lstm"):
    """A request function for closed_loop: request n asks for user ``first + n`` (no answer is a repeat)."""
    async def get(client, n):
        return await client.get(f"/users/{users[(first + n) % len(users)]}/recommendations",
                                params={"k": 10, "model": model_name})
    return get


def compare_batching(args, model: Path, seqs, fingerprint: str, work: Path) -> None:
    """Four servers in turn, on the same model, users and client levels: an earlier source tree's batching
    (``--compare-batching SRC``, run with its defaults: the first request of every batch waits 5 ms, batch <= 32),
    this tree with ``--max-batch 1``, and this tree's adaptive batching (a lone request never waits) without and
    with its wait under load (a batch that already has company waits up to 5 ms for more)."""
    variants = [("earlier: fixed 5 ms wait, batch <= 32", ["--max-batch", "32", "--batch-wait-ms", "5"],
                 args.compare_batching),
                ("--max-batch 1", ["--max-batch", "1"], None),
                ("adaptive, no wait", ["--max-batch", "32", "--batch-wait-ms", "0"], None),
                ("adaptive, 5 ms wait under load (default)", ["--max-batch", "32", "--batch-wait-ms", "5"], None)]
    levels = [int(x) for x in args.clients.split(",")]
    rows, load_before = [], os.getloadavg()
    for repeat in range(args.repeats):
        turn = repeat % len(variants)  # each round starts with another variant: no variant always runs first
        for name, flags, src in variants[turn:] + variants[:turn]:
            proc, url = start_server(args, model, work / f"cmp-{repeat}-{len(rows)}.db", flags, src)
            try:
                users = seed_users(url, seqs, args.users)
                asyncio.run(closed_loop(url, 2, 8, 60, recommendations_of(users, 0)))  # warm-up
                for c in levels:
                    calls_before = model_calls(url)
                    row = (wrk_level(url, c, args.seconds, len(users), "lstm") if args.wrk else
                           asyncio.run(closed_loop(url, c, args.requests, args.seconds, recommendations_of(users, 8))))
                    count, total = (a - b for a, b in zip(model_calls(url), calls_before))
                    row["mean_batch"] = total / count if count else 0.0  # from the server's own counters
                    rows.append({"variant": name, "repeat": repeat, **row})
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                proc.terminate()
                proc.wait(30)
    record = {"what": "GET /users/{id}/recommendations (LSTM), closed-loop clients, four batching variants in turn",
              "command": " ".join(sys.argv), "commit": _git_commit(), "baseline_src": args.compare_batching,
              "baseline_commit": args.baseline_commit, "model": str(model), "data_fingerprint": fingerprint,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d"), "load_average_before": load_before[0],
              "load_average_after": os.getloadavg()[0], "users": args.users, "max_requests": args.requests,
              "max_seconds": args.seconds, "client": "wrk (C, one thread)" if args.wrk else "httpx (Python, asyncio)",
              "rows": rows}
    print(render_batching(record))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


def model_calls(url: str, model: str = "lstm") -> tuple[float, float]:
    """The server's count of model calls and of requests they answered (its batch-size histogram)."""
    text = httpx.get(url + "/metrics", timeout=60).text
    return (_metric_sum(text, 'dualrec_model_batch_size_count{model="%s"}' % model),
            _metric_sum(text, 'dualrec_model_batch_size_sum{model="%s"}' % model))


def render_batching(record: dict) -> str:
    """The Markdown table of a --compare-batching record (what docs/service.md shows)."""
    lines = [f"Record `{record.get('path', 'results/serve/batching.json')}`: {record['what']}; commit "
             f"{record['commit'][:10]} against {record['baseline_commit'] or record['baseline_src']}; "
             f"{record['machine']}; load average {record['load_average_before']:.1f} before, "
             f"{record['load_average_after']:.1f} after (a shared machine); client {record.get('client', 'httpx')}; "
             + (f"each level {record['max_seconds']:g} s" if "wrk" in record.get("client", "") else
                f"each level at most {record['max_requests']} requests or {record['max_seconds']:g} s")
             + f"; {record['users']} stored users.",
             f"Command: `{record['command']}`", "",
             "| batching | round | clients | requests (2xx) | req/s | p50 ms | p95 ms | p99 ms | mean batch |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['repeat'] + 1} | {r['clients']} | {r['requests']} ({r['ok']}) | {r['rps']:.1f} | "
              f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['mean_batch']:.1f} |" for r in record["rows"]]
    lines += ["", "Median over the rounds:", "",
              "| batching | clients | req/s | p50 ms | p99 ms | req/s against --max-batch 1 |", "|---|---|---|---|---|---|"]
    medians = {}
    for r in record["rows"]:
        medians.setdefault((r["variant"], r["clients"]), []).append(r)
    for (variant, clients), rows in medians.items():
        rps = float(np.median([r["rps"] for r in rows]))
        unbatched = float(np.median([r["rps"] for r in record["rows"]
                                     if r["variant"] == "--max-batch 1" and r["clients"] == clients]))
        lines.append(f"| {variant} | {clients} | {rps:.1f} | {np.median([r['p50'] for r in rows]):.1f} | "
                     f"{np.median([r['p99'] for r in rows]):.1f} | {rps / unbatched:.2f}x |")
    return "\n".join(lines)


def render_into(record_path: str, doc: str) -> None:
    """Replace the text between ``<!-- batching: begin -->`` and ``<!-- batching: end -->`` in ``doc``."""
    record = {**json.loads(Path(record_path).read_text()), "path": record_path}
    text = Path(doc).read_text()
    begin, end = "<!-- batching: begin -->", "<!-- batching: end -->"
    head, rest = text.split(begin, 1)
    Path(doc).write_text(head + begin + "\n" + render_batching(record) + "\n" + end + rest.split(end, 1)[1])


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=Path(__file__).parent).stdout.strip()
    return done.stdout.strip() + ("-dirty" if dirty else "")


async def closed_loop(url: str, clients: int, max_requests: int, seconds: float, request) -> dict:
    """``clients`` concurrent loops sharing a budget of ``max_requests`` and ``seconds``."""
    latencies, statuses, bodies, transport_errors = [], [], [], []
    issued = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def loop():
            nonlocal issued
            while issued < max_requests and time.perf_counter() < stop_at:
                n = issued
                issued += 1
                t = time.perf_counter()
                try:
                    r = await request(client, n)
                except httpx.TransportError as exc:  # counted (status 0), not fatal: the figures say it happened
                    latencies.append(time.perf_counter() - t)
                    statuses.append(0)
                    transport_errors.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - t)
                statuses.append(r.status_code)
                bodies.append(r.json() if r.headers.get("content-type", "").startswith("application/json") else {})

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    ok = sum(200 <= s < 300 for s in statuses)
    return {"clients": clients, "requests": len(lat), "ok": ok, "wall_s": wall, "rps": len(lat) / wall,
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)),
            "mean_batch": float(np.mean([b.get("batch_size", 1) for b in bodies if "batch_size" in b] or [0])),
            "fallbacks": sum(bool(b.get("fallback")) for b in bodies), "transport_errors": len(transport_errors)}


def wrk_level(url: str, clients: int, seconds: float, users: int, model: str) -> dict:
    """The same closed loop driven by wrk (C, one thread): the server's figures without a Python client's cost."""
    script = Path(__file__).with_name("wrk_recommendations.lua")
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--timeout", "120s",
                          "-s", str(script), url], capture_output=True, text=True, check=True,
                         env={**os.environ, "BENCH_USERS": str(users), "BENCH_MODEL": model}).stdout
    r = json.loads(out.strip().splitlines()[-1])
    wall = r["duration_us"] / 1e6
    return {"clients": clients, "requests": r["requests"], "ok": r["requests"] - r["non2xx"] - r["errors"],
            "wall_s": wall, "rps": r["requests"] / wall, "p50": r["p50_us"] / 1000, "p95": r["p95_us"] / 1000,
            "p99": r["p99_us"] / 1000, "mean_batch": None, "fallbacks": 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratings")
    p.add_argument("--data-dir")
    p.add_argument("--model", help="LSTM run folder (else a quick one is fitted)")
    p.add_argument("--dualrec", help="DUALRec run folder: adds the DUALRec path")
    p.add_argument("--embedded-dualrec", action="store_true",
                   help="build a DUALRec run over the LSTM with the embedded Gemma (llama.cpp) and bench it")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--requests", type=int, default=400, help="most requests per level (LSTM)")
    p.add_argument("--dualrec-requests", type=int, default=32, help="most requests per level (DUALRec)")
    p.add_argument("--dualrec-seconds", type=float, default=90.0, help="most seconds per level (DUALRec)")
    p.add_argument("--llm-max-batch", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30.0, help="most seconds per level")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--llm-budget", type=float, default=10.0)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--wrk", action="store_true", help="also drive the LSTM path with wrk (Debian package `wrk`), "
                                                       "for time-bounded levels without the Python client's cost; "
                                                       "with --compare-batching, wrk drives every level")
    p.add_argument("--compare-batching", metavar="SRC",
                   help="instead of the paths: an earlier source tree's batching (its src/ folder) against "
                        "--max-batch 1 and adaptive batching, side by side (see compare_batching)")
    p.add_argument("--baseline-commit", help="--compare-batching: the commit SRC was taken from (for the record)")
    p.add_argument("--repeats", type=int, default=1, help="--compare-batching: rounds of the four servers")
    p.add_argument("--render", nargs=2, metavar=("RECORD", "DOC"),
                   help="write a --compare-batching record's table into DOC (between its batching markers), "
                        "run nothing else")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if args.render:
        return render_into(*args.render)
    if not (args.ratings and args.data_dir):
        p.error("--ratings and --data-dir are required")

    from dualrec.data import read_ml1m

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = Path(args.model) if args.model else fit_quick_lstm(args, work / "run")
    if args.embedded_dualrec:
        args.dualrec = str(embedded_dualrec(args, model, work / "dualrec"))
    print(f"models: --model {model}" + (f" --dualrec {args.dualrec}" if args.dualrec else ""), flush=True)
    dataset = read_ml1m(Path(args.data_dir) / "ml-1m", ratings=args.ratings).top_items(1000)
    seqs = dataset.sequences()
    if args.compare_batching:
        return compare_batching(args, model, seqs, dataset.fingerprint(), work)
    proc, url = start_server(args, model, work / "events.db")
    rows = []
    try:
        users = seed_users(url, seqs, args.users)
        levels = [int(x) for x in args.clients.split(",")]
        paths = [("lstm", args.requests, args.seconds)]
        if args.dualrec:
            paths.append(("dualrec", args.dualrec_requests, args.dualrec_seconds))
        offset = 0  # each level asks for users the previous levels did not: no answer is a repeat
        for model_name, budget, seconds in paths:
            # warm-up (loads the LLM on first use)
            asyncio.run(closed_loop(url, 2, 4, 120, recommendations_of(users, offset, model_name)))
            offset += 4
            for c in levels:
                row = asyncio.run(closed_loop(url, c, budget, seconds, recommendations_of(users, offset, model_name)))
                offset += row["requests"]
                rows.append({"path": f"GET recommendations ({model_name})", **row})
                print(json.dumps(rows[-1]), flush=True)

        if args.wrk:
            for c in levels:
                rows.append({"path": "GET recommendations (lstm), wrk client", **wrk_level(url, c, args.seconds,
                                                                                         len(users), "lstm")})
                print(json.dumps(rows[-1]), flush=True)

        async def post(client, n):
            return await client.post(f"/users/writer{n % 97}/events", json={"events": [{"item": int(seqs[0][n % 30])}]},
                                     headers={"Idempotency-Key": f"bench-{n}"})

        for c in (1, 8):
            row = asyncio.run(closed_loop(url, c, args.requests, args.seconds, post))
            rows.append({"path": "POST events (SQLite, synchronous=FULL)", **row})
            print(json.dumps(rows[-1]), flush=True)
        metrics = httpx.get(url + "/metrics").text
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs; python {platform.python_version()}; "
          f"date {time.strftime('%Y-%m-%d')}; load average at the end {os.getloadavg()[0]:.1f}; server batch <= "
          f"{args.max_batch} (DUALRec {args.llm_max_batch}), wait {args.batch_wait_ms} ms, LLM budget "
          f"{args.llm_budget} s, torch threads {args.torch_threads}\n")
    calls = {}
    for m in ("lstm", "dualrec"):
        n = _metric_sum(metrics, 'dualrec_model_batch_size_count{model="%s"}' % m)
        if n:
            calls[m] = (int(n), _metric_sum(metrics, 'dualrec_model_batch_size_sum{model="%s"}' % m) / n)
    print("server model calls (count, mean batch): " + ", ".join(f"{m} {n} ({b:.1f})" for m, (n, b) in calls.items())
          + "\n")
    print("| path | clients | requests (2xx) | throughput req/s | p50 ms | p95 ms | p99 ms | mean batch | fallbacks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        batch = "-" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"  # wrk rows: no answer bodies read
        print(f"| {r['path']} | {r['clients']} | {r['requests']} ({r['ok']}) | {r['rps']:.1f} | {r['p50']:.1f} | "
              f"{r['p95']:.1f} | {r['p99']:.1f} | {batch} | {r['fallbacks']} |")
    fallbacks = [line for line in metrics.splitlines() if line.startswith("dualrec_llm_fallbacks_total")]
    print("\nserver fallbacks: " + (", ".join(fallbacks) or "none"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _metric_sum(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


if __name__ == "__main__":
    main()
