"""Shared pieces of the service tests: a small real LSTM run, databases (SQLite; a throwaway PostgreSQL cluster when
installed), the app on a real uvicorn socket and `dualrec serve` as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from dualrec.serve.app import create_app
from dualrec.serve.deployment import load_recommender
from dualrec.serve.limits import Limits
from dualrec.serve.settings import ServeSettings

NO_RATE = Limits(rate_per_s=0)
TEST_HOSTS = ("testserver", "127.0.0.1")  # TestClient's Host, and uvicorn on loopback


# ---- fixtures: a real trained model, databases, servers -------------------------------------------------------

@pytest.fixture(scope="session")
def run_dir(ml1m_small, tmp_path_factory):
    """A run folder as `dualrec train lstm -c configs/lstm.yaml` writes it, with a small real LSTM (300 windows,
    1 epoch: seconds) on the strict protocol's training split."""
    from dualrec import experiment as ex
    from dualrec.config import ExperimentConfig

    cfg = ExperimentConfig.load(Path(__file__).resolve().parents[1] / "configs" / "lstm.yaml",
                                ["model.epochs=1", "model.max_windows=300", "model.progress=false", "seed=7"])
    run = tmp_path_factory.getbasetemp() / "serve-runs" / "lstm-strict"  # one fit for every module that asks
    if not (run / "model" / "manifest.json").exists():
        ex.fit(cfg, ex.prepare(cfg, dataset=ml1m_small), run)
    return run


@pytest.fixture(scope="session")
def model_dir(run_dir):
    """The saved model inside the run folder (what DUALRec's ``stage1`` points at)."""
    return run_dir / "model"


@pytest.fixture(scope="session")
def lstm(run_dir):
    return load_recommender(run_dir)  # through experiment.load_run, as `dualrec serve --model RUN` does


@pytest.fixture(scope="session")
def user_histories(ml1m_small):
    seqs = ml1m_small.sequences()
    return [seqs[i][:40] for i in range(40)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a free port), stopped after the session; skipped if absent."""
    pytest.importorskip("psycopg", reason="psycopg (the serve extra) not installed")
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("PostgreSQL not installed (no initdb/pg_ctl; Debian package `postgresql`)")
    pg_ctl = str(Path(initdb).resolve().parent / "pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="dualrec-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    subprocess.run(as_user + [str(initdb), "-D", str(data), "--auth=trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "start", "-o",
                              f"-p {port} -c listen_addresses=127.0.0.1 -k {base}"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh database: a new SQLite file, or a new database in the throwaway PostgreSQL cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    import psycopg

    server = request.getfixturevalue("postgres_url")
    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name


def make_app(lstm, db, **kw):
    """The app over the given LSTM; ``kw`` are ServeSettings fields (``recommenders``: more models)."""
    recommenders = {"lstm": lstm, **kw.pop("recommenders", {})}
    settings = ServeSettings(**{"model": "unused", "db": str(db), "allowed_hosts": TEST_HOSTS, **kw})
    return create_app(settings, recommenders=recommenders)


@contextlib.contextmanager
def uvicorn_server(app):
    """The app on a real socket: uvicorn in a thread on 127.0.0.1, a free port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def cli_server(model_dir: Path, db: Path, *extra: str, port: int | None = None, env: dict | None = None):
    """`dualrec serve` in its own process (the real command), stopped with SIGKILL or SIGINT by the test."""
    port = port or free_port()
    log = Path(tempfile.mkstemp(prefix="dualrec-serve-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dualrec.cli", "serve", "--model", str(model_dir), "--db",
                                 str(db), "--port", str(port), *extra], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    proc.log_path = log  # the server's output, for failure messages
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("dualrec serve did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.2)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.unlink(missing_ok=True)


def metric(text: str, line_prefix: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix)]
    return sum(values)
