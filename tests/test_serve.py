"""The recommendation service against a real small LSTM trained on real MovieLens rows, a real SQLite file (and a
throwaway PostgreSQL cluster when installed), real uvicorn sockets on 127.0.0.1 and a real headless Chromium."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fastapi.testclient import TestClient
from serving import (NO_RATE, TEST_HOSTS, cli_server, db_url, free_port, lstm, make_app,  # noqa: F401 - fixtures
                     metric, model_dir, postgres_url, run_dir, user_histories, uvicorn_server)

from dualrec.serve.app import create_app
from dualrec.serve.deployment import load_recommender
from dualrec.serve.limits import Limits
from dualrec.serve.settings import ServeSettings


# ---- durability, idempotency, concurrency (SQLite and PostgreSQL) ---------------------------------------------

def test_events_persist_across_restart_and_change_the_next_answer(lstm, db_url):
    with TestClient(make_app(lstm, db_url, limits=NO_RATE)) as client:
        r = client.post("/users/alice/events", json={"events": [
            {"item": 1193, "timestamp": 100.0}, {"title": "Toy Story", "timestamp": "1970-01-01T00:03:20"}]})
        assert r.status_code == 201, r.text
        assert [e["item"] for e in r.json()["events"]] == [1193, 1]
        assert r.json()["events"][1]["title"] == "Toy Story (1995)"
        first = client.get("/users/alice/recommendations", params={"k": 10}).json()
    # a new app on the same database: the events are there, in timestamp order
    with TestClient(make_app(lstm, db_url, limits=NO_RATE)) as client:
        again = client.get("/users/alice/recommendations", params={"k": 10}).json()
        assert again["history_length"] == 2
        assert [i["item"] for i in again["items"]] == [i["item"] for i in first["items"]]
        assert client.app.state.store.history("alice") == ([1193, 1], [100.0, 200.0])
        stored = client.get("/users/alice/events").json()["events"]
        assert [(e["item"], e["title"], e["timestamp"]) for e in stored] == [
            (1193, "One Flew Over the Cuckoo's Nest (1975)", 100.0), (1, "Toy Story (1995)", 200.0)]
        assert client.get("/users/nobody/events").json()["events"] == []
        # watching the top recommendation changes the very next answer: it leaves the list (history is masked)
        top = again["items"][0]["item"]
        assert client.post("/users/alice/events", json={"events": [{"item": top}]}).status_code == 201
        after = client.get("/users/alice/recommendations", params={"k": 10}).json()
        assert after["history_length"] == 3
        assert top not in [i["item"] for i in after["items"]]
        expected = lstm.recommend([np.array([1193, 1, top])], 10).items[0].tolist()
        assert [i["item"] for i in after["items"]] == expected


def test_idempotent_retries_do_not_duplicate(lstm, db_url):
    body = {"events": [{"item": 1193}, {"item": 260}]}
    with TestClient(make_app(lstm, db_url, limits=NO_RATE)) as client:
        first = client.post("/users/bob/events", json=body, headers={"Idempotency-Key": "k-1"})
        retry = client.post("/users/bob/events", json=body, headers={"Idempotency-Key": "k-1"})
        assert (first.status_code, retry.status_code) == (201, 200)
        assert retry.json()["replayed"] is True and first.json()["replayed"] is False
        assert retry.json()["events"] == first.json()["events"]  # same timestamps: the stored answer, not a new one
        assert client.app.state.store.count_events("bob") == 2
        conflict = client.post("/users/bob/events", json={"events": [{"item": 1}]}, headers={"Idempotency-Key": "k-1"})
        assert conflict.status_code == 409 and "k-1" in conflict.json()["detail"]
        # the same key for another user is another key
        assert client.post("/users/carol/events", json=body, headers={"Idempotency-Key": "k-1"}).status_code == 201
        assert client.app.state.store.count_events("bob") == 2
        metrics = client.get("/metrics").text
        assert metric(metrics, "dualrec_events_stored_total") == 4


def test_concurrent_writers_lose_nothing(lstm, db_url):
    """16 threads post over real sockets at once; duplicates of one key race each other; every event is kept once."""
    app = make_app(lstm, db_url, limits=NO_RATE)
    n_threads, posts = 16, 12
    items = lstm.catalog.ids[:50].tolist()
    with uvicorn_server(app) as url:
        def writer(t: int) -> list[int]:
            codes = []
            with httpx.Client(base_url=url, timeout=60) as c:
                for p in range(posts):
                    user = f"u{(t + p) % 4}"   # writers share users, so rows of one user interleave
                    ev = [{"item": items[(t * posts + p + j) % 50], "timestamp": t * 1000 + p + j / 10} for j in range(3)]
                    codes.append(c.post(f"/users/{user}/events", json={"events": ev}).status_code)
                # every thread also retries one shared key: exactly one of them stores it
                codes.append(c.post("/users/shared/events", json={"events": [{"item": items[0]}]},
                                    headers={"Idempotency-Key": "race"}).status_code)
            return codes

        with cf.ThreadPoolExecutor(n_threads) as pool:
            codes = [c for cs in pool.map(writer, range(n_threads)) for c in cs]
        store = app.state.store
        assert codes.count(201) == n_threads * posts + 1 and codes.count(200) == n_threads - 1
        assert sum(store.count_events(f"u{i}") for i in range(4)) == n_threads * posts * 3
        assert store.count_events("shared") == 1
        hist, stamps = store.history("u0")
        assert stamps == sorted(stamps) and len(hist) == store.count_events("u0")


def _append_many(db: str, writer: int, n: int) -> None:
    from dualrec.serve.store import EventStore

    store = EventStore(db)
    for i in range(n):
        store.append(f"p{i % 3}", [1193, 260], [writer * 1000 + i, writer * 1000 + i + 0.5],
                     idempotency_key=f"w{writer}-{i}")
        store.append("p0", [1], [0.0], idempotency_key="same-for-all")  # every process retries one shared key
    store.close()


def test_sqlite_writers_in_several_processes_lose_nothing(tmp_path):
    import multiprocessing as mp

    from dualrec.serve.store import EventStore

    db = str(tmp_path / "multi.db")
    EventStore(db).close()  # created once, as the first server start does
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(db, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = EventStore(db)
    assert store.count_events() == 4 * 40 * 2 + 1
    assert store.count_events("p0") == sum(2 for i in range(40) if i % 3 == 0) * 4 + 1


def test_idempotency_keys_expire_after_their_ttl(tmp_path):
    from dualrec.serve.store import EventStore

    db = tmp_path / "ttl.db"
    store = EventStore(db)
    assert not store.append("u", [1], [1.0], idempotency_key="k").replayed
    assert store.append("u", [1], [1.0], idempotency_key="k").replayed
    store.close()
    store = EventStore(db, idempotency_ttl_s=3600)  # an hour-old key is kept ...
    assert store.append("u", [1], [1.0], idempotency_key="k").replayed
    store.close()
    store = EventStore(db, idempotency_ttl_s=0)  # ... a key past its TTL is purged when the store opens
    assert not store.append("u", [1], [1.0], idempotency_key="k").replayed
    assert store.count_events("u") == 2


def test_sqlite_is_one_wal_file_created_on_first_start(lstm, tmp_path):
    db = tmp_path / "sub" / "events.db"
    with TestClient(make_app(lstm, db)) as client:
        assert db.exists()
        with client.app.state.store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_events_answered_2xx_survive_a_killed_server(run_dir, tmp_path):
    """`dualrec serve --model RUN` is killed with SIGKILL right after answering; a new process finds every event."""
    db = tmp_path / "crash.db"
    with cli_server(run_dir, db) as (url, proc):
        for i, item in enumerate([1193, 661, 914, 3408]):
            r = httpx.post(f"{url}/users/dora/events", json={"events": [{"item": item, "timestamp": i}]})
            assert r.status_code == 201
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with cli_server(run_dir, db) as (url, proc):
        r = httpx.get(f"{url}/users/dora/recommendations", params={"k": 5})
        assert r.status_code == 200 and r.json()["history_length"] == 4
        assert len(r.json()["items"]) == 5
        proc.send_signal(signal.SIGINT)  # a clean shutdown too
        assert proc.wait(20) == 0


def test_several_server_processes_share_postgresql(model_dir, postgres_url):
    """`dualrec serve --workers 2` on one PostgreSQL database: writes through both processes all land."""
    import psycopg

    name = f"w_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    db = postgres_url.rsplit("/", 1)[0] + "/" + name
    with cli_server(model_dir, db, "--workers", "2", "--rate", "0") as (url, proc):
        pids, deadline = set(), time.monotonic() + 90
        while len(pids) < 2 and time.monotonic() < deadline:  # new connections until both processes have answered
            with contextlib.suppress(httpx.TransportError):
                pids.add(httpx.get(url + "/healthz", timeout=30).json()["pid"])
        assert len(pids) == 2, proc.log_path.read_text()

        def writer(t: int) -> list[int]:
            with httpx.Client(base_url=url, timeout=60) as c:  # a new connection each post: both workers get some
                return [httpx.post(f"{url}/users/shared/events", json={"events": [{"item": 1193, "timestamp": t * 100 + p}]},
                                   headers={"Idempotency-Key": f"{t}-{p}"}, timeout=60).status_code
                        for p in range(10)] + [c.get("/healthz").status_code]

        with cf.ThreadPoolExecutor(8) as pool:
            codes = [c for cs in pool.map(writer, range(8)) for c in cs]
        assert codes.count(201) == 80 and codes.count(200) == 8
        r = httpx.get(f"{url}/users/shared/recommendations", params={"k": 3})
        assert r.json()["history_length"] == 80
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


# ---- answers ---------------------------------------------------------------------------------------------------

def test_adhoc_recommendations_match_the_model_and_carry_item_details(lstm, tmp_path):
    with TestClient(make_app(lstm, tmp_path / "e.db")) as client:
        r = client.post("/recommendations", json={"history": [1193, "Star Wars: Episode IV - A New Hope (1977)"],
                                                   "k": 7})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == "lstm" and out["history_length"] == 2 and out["fallback"] is False
        expected = lstm.recommend([np.array([1193, 260])], 7)
        assert [i["item"] for i in out["items"]] == expected.items[0].tolist()
        np.testing.assert_allclose([i["score"] for i in out["items"]], expected.scores[0], rtol=1e-5)
        first = out["items"][0]
        assert first == {**lstm.catalog.describe(first["item"]), "rank": 1, "score": first["score"]}
        assert [i["rank"] for i in out["items"]] == list(range(1, 8))
        # the cold start call: an empty history is allowed here
        assert len(client.post("/recommendations", json={"history": [], "k": 3}).json()["items"]) == 3


def test_concurrent_requests_are_micro_batched_with_the_same_answers(lstm, user_histories, tmp_path):
    app = make_app(lstm, tmp_path / "e.db", limits=NO_RATE, batch_wait_ms=50, max_batch=16)
    with uvicorn_server(app) as url:
        def ask(h):
            return httpx.post(f"{url}/recommendations", json={"history": h.tolist(), "k": 5}, timeout=60).json()

        with cf.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, user_histories[:16]))
        metrics = httpx.get(f"{url}/metrics").text
    assert max(a["batch_size"] for a in answers) > 1
    calls = metric(metrics, 'dualrec_model_batch_size_count{model="lstm"}')
    assert calls < 16 and metric(metrics, 'dualrec_model_batch_size_sum{model="lstm"}') == 16
    expected = lstm.recommend(user_histories[:16], 5)
    for a, items in zip(answers, expected.items):
        assert [i["item"] for i in a["items"]] == items.tolist()


def test_llm_budget_falls_back_to_the_lstm_ranking(lstm, model_dir, user_histories, tmp_path):
    """A real second recommender in the DUALRec slot, with a budget shorter than one batched call: the answer is the
    LSTM ranking, flagged; with a generous budget the same server answers from that model, unflagged."""
    slow = load_recommender(model_dir)  # a real model; no call of it fits in a budget of 0 s
    history = user_histories[0].tolist()
    tight = make_app(lstm, tmp_path / "a.db", recommenders={"dualrec": slow}, llm_budget_s=0.0)
    with TestClient(tight) as client:
        r = client.post("/recommendations", json={"history": history, "k": 5, "model": "dualrec"}).json()
        assert r["fallback"] is True and "budget of 0s" in r["fallback_reason"]
        assert [i["item"] for i in r["items"]] == lstm.recommend([np.array(history)], 5).items[0].tolist()
        assert r["lstm_suggestion"] == r["items"][0]["title"] and r["llm_text"] is None
        metrics = client.get("/metrics").text
        assert metric(metrics, 'dualrec_llm_fallbacks_total{reason="budget"}') == 1
        assert metric(metrics, 'dualrec_model_batch_size_count{model="dualrec"}') == 0  # dropped before the call
    generous = make_app(lstm, tmp_path / "b.db", recommenders={"dualrec": slow}, llm_budget_s=30)
    with TestClient(generous) as client:
        r = client.post("/recommendations", json={"history": history, "k": 5, "model": "dualrec"}).json()
        assert r["model"] == "dualrec" and r["fallback"] is False and r["fallback_reason"] is None


def test_batcher_answers_at_once_when_a_deadline_would_be_missed(lstm):
    """After a real call the batcher knows how long one takes: a request with less time left is refused at once,
    without a model call; once that estimate is stale, a call runs anyway (so a passing slowdown is forgotten)."""
    import asyncio

    from dualrec.serve.batching import MicroBatcher, WouldMissDeadline
    from dualrec.serve.metrics import Metrics

    history = lstm.catalog.ids[:10]

    async def scenario(probe_after_s: float) -> tuple[list, str]:
        metrics = Metrics()
        batcher = MicroBatcher(lstm, "lstm", max_wait_s=0.0, metrics=metrics, probe_after_s=probe_after_s)
        outcomes = [await batcher.submit(history, 5)]  # sets the estimate
        assert batcher.call_seconds > 0
        try:
            outcomes.append(await batcher.submit(history, 5, deadline=time.monotonic()))  # no time left
        except WouldMissDeadline as exc:
            outcomes.append(exc)
        outcomes.append(await batcher.submit(history, 5, deadline=time.monotonic() + 60))
        await batcher.close()
        return outcomes, metrics.render()

    outcomes, text = asyncio.run(scenario(probe_after_s=60))
    assert isinstance(outcomes[1], WouldMissDeadline) and outcomes[1].seconds > 0
    assert outcomes[2].items.tolist() == outcomes[0].items.tolist()
    assert metric(text, 'dualrec_model_batch_size_count{model="lstm"}') == 2  # the refused one cost no call
    outcomes, text = asyncio.run(scenario(probe_after_s=0))  # estimate always stale: every request is tried
    assert outcomes[1].items.tolist() == outcomes[0].items.tolist()
    assert metric(text, 'dualrec_model_batch_size_count{model="lstm"}') == 3


@pytest.fixture(scope="session")
def dualrec_dir(model_dir, ml1m_small, tmp_path_factory):
    """A real DUALRec run: the small LSTM as Stage 1 and the embedded Gemma 3 270M through llama.cpp."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the llamacpp extra) not installed")
    from dualrec.models import build_model

    model = build_model("dualrec", {"stage1": str(model_dir), "cache": False, "progress": False,
                                    "max_new_tokens": 48})
    model.fit(ml1m_small.sequences(), ml1m_small.catalog)
    return model.save(tmp_path_factory.mktemp("dualrec") / "model")


def test_dualrec_with_the_embedded_llm_and_its_time_budget(dualrec_dir, user_histories, tmp_path):
    """The real hybrid behind the service: a tiny budget answers with the LSTM ranking, flagged, without waiting for
    the LLM; a generous one answers with the LLM's text and the LSTM's suggestion. Its Stage 1 is the ranker."""
    history = user_histories[3].tolist()
    settings = dict(model=None, dualrec=str(dualrec_dir), limits=NO_RATE, allowed_hosts=TEST_HOSTS)
    app = create_app(ServeSettings(db=str(tmp_path / "a.db"), llm_budget_s=0.0, **settings))
    hybrid = app.state.slot.current.recommenders["dualrec"]
    assert app.state.slot.current.recommenders["lstm"] is hybrid.stage1
    stage1 = hybrid.stage1.recommend([np.array(history)], 5)
    with TestClient(app) as client:
        r = client.post("/recommendations", json={"history": history, "k": 5, "model": "dualrec"}).json()
        assert r["fallback"] is True and "time budget" in r["fallback_reason"]
        assert [i["item"] for i in r["items"]] == stage1.items[0].tolist()
    app = create_app(ServeSettings(db=str(tmp_path / "b.db"), llm_budget_s=300, **settings),
                     recommenders={"dualrec": hybrid})
    with TestClient(app) as client:
        r = client.post("/recommendations", json={"history": history, "k": 5, "model": "dualrec"}).json()
    assert r["model"] == "dualrec" and r["llm_text"]  # the LLM wrote something
    assert r["lstm_suggestion"] == hybrid.catalog.title(int(stage1.items[0][0]))
    if r["fallback"]:  # the base model may name nothing new: then DUALRec itself falls back, and says why
        assert r["fallback_reason"].startswith("DUALRec used its LSTM ranking")
        assert [i["item"] for i in r["items"]] == stage1.items[0].tolist()
    else:
        assert r["items"] and not {i["item"] for i in r["items"]} & set(history)


def test_dualrec_own_fallback_reason_is_passed_on(model_dir, ml1m_small, user_histories, tmp_path):
    """A real DUALRec whose LLM server is down (a closed port on 127.0.0.1): DUALRec answers with its Stage-1 ranking
    and says why; the service passes that on as the fallback reason and counts it."""
    from dualrec.models import build_model

    hybrid = build_model("dualrec", {"stage1": str(model_dir), "cache": False, "progress": False, "backend": {
        "kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "none", "max_retries": 0,
        "timeout": 5}})
    hybrid.fit(ml1m_small.sequences(), ml1m_small.catalog)  # loads Stage 1; nothing to train
    history = user_histories[5].tolist()
    app = create_app(ServeSettings(model=None, db=str(tmp_path / "e.db"), llm_budget_s=60, allowed_hosts=TEST_HOSTS),
                     recommenders={"dualrec": hybrid})
    with TestClient(app) as client:
        r = client.post("/recommendations", json={"history": history, "k": 5, "model": "dualrec"}).json()
        assert r["fallback"] is True and r["fallback_reason"].startswith("DUALRec used its LSTM ranking: ")
        assert len(r["fallback_reason"]) > len("DUALRec used its LSTM ranking: ")  # the backend's error, named
        assert [i["item"] for i in r["items"]] == hybrid.stage1.recommend([np.array(history)], 5).items[0].tolist()
        assert r["lstm_suggestion"] == r["items"][0]["title"]
        assert metric(client.get("/metrics").text, 'dualrec_llm_fallbacks_total{reason="model"}') == 1


# ---- input limits and errors ------------------------------------------------------------------------------------

def test_bad_inputs_get_clear_4xx(lstm, tmp_path):
    limits = Limits(max_history=20, max_k=50, max_body_bytes=2000, rate_per_s=0)
    with TestClient(make_app(lstm, tmp_path / "e.db", limits=limits)) as client:
        r = client.post("/users/eve/events", json={"events": [{"item": 1193}, {"item": 99999999},
                                                               {"title": "Qwxz Blorf Unfilmed"}]})
        assert r.status_code == 422
        assert [(u["loc"], u["type"], u["input"]) for u in r.json()["detail"]] == [
            (["body", "events", 1, "item"], "unknown_item", 99999999),
            (["body", "events", 2, "title"], "unknown_title", "Qwxz Blorf Unfilmed")]
        assert "item id 99999999 is not in the model's catalog" in r.text
        assert "no catalog film matches 'Qwxz Blorf Unfilmed' (no-match: nothing in the catalog scores 80)" in r.text
        assert client.app.state.store.count_events("eve") == 0  # nothing stored from a refused post
        cases = [
            ("post", "/users/eve/events", {"events": [{"item": 1, "title": "Heat"}]}, 422, "exactly one"),
            ("post", "/users/eve/events", {"events": []}, 422, "at least 1"),
            ("post", "/users/bad%20id/events", {"events": [{"item": 1}]}, 422, "pattern"),
            ("get", "/users/eve/recommendations?k=0", None, 422, "greater than or equal"),
            ("get", "/users/eve/recommendations?k=51", None, 422, "less than or equal"),
            ("get", "/users/eve/recommendations?model=gpt", None, 422, "lstm"),
            ("get", "/users/nobody/recommendations", None, 404, "no stored events for user 'nobody'"),
            ("post", "/recommendations", {"history": list(range(1, 30))}, 422, "at most 20"),
            ("post", "/recommendations", {"history": [1], "model": "dualrec"}, 422, "Input should be 'lstm'"),
            ("post", "/recommendations", {"history": [1], "k": "ten"}, 422, "integer"),
            ("post", "/recommendations", {"history": [1, True]}, 422, "integer"),  # JSON true is not item 1
            ("post", "/recommendations", {"history": [1, "Qwxz Blorf"]}, 422, '"loc":["body","history",1]'),
        ]
        for method, path, body, status, message in cases:
            r = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
            assert r.status_code == status, (path, body, r.text)
            assert message in r.text, (path, body, r.text)
        r = client.post("/recommendations", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "json" in r.text.lower()
        r = client.post("/recommendations", json={"history": ["x" * 100] * 20})
        assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: refused while streaming
            for _ in range(10):
                yield b" " * 500
        r = client.post("/recommendations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert metric(client.get("/metrics").text, 'dualrec_requests_rejected_total{reason="body_size"}') == 2


def test_rate_limit_per_client(lstm, tmp_path):
    with TestClient(make_app(lstm, tmp_path / "e.db", limits=Limits(rate_per_s=1, rate_burst=3))) as client:
        codes = [client.get("/items", params={"q": "heat"}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = client.get("/items")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate limit" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200  # probes are never limited


def test_token_bucket_refills_at_its_rate_per_client():
    from dualrec.serve.limits import TokenBucketLimiter

    bucket = TokenBucketLimiter(rate=2.0, burst=2)
    assert [bucket.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]  # third waits half a token period
    assert bucket.take("b", now=0.0) == 0.0                                   # another client has its own bucket
    assert bucket.take("a", now=0.25) == pytest.approx(0.25)                  # half a token refilled: not yet
    assert bucket.take("a", now=0.5) == 0.0                                   # one token refilled
    assert bucket.take("a", now=10.0) == 0.0 and bucket.take("a", now=10.0) == 0.0  # refill capped at the burst
    assert bucket.take("a", now=10.0) > 0


def test_server_errors_hide_the_stack_trace(lstm, tmp_path):
    app = make_app(lstm, tmp_path / "e.db")
    with TestClient(app, raise_server_exceptions=False) as client:
        with app.state.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE events")  # a broken database: a real failure inside the endpoint
        r = client.post("/users/eve/events", json={"events": [{"item": 1}]})
        assert r.status_code == 500
        assert r.json()["detail"].startswith("internal server error (log reference ")
        assert "Traceback" not in r.text and "events" not in r.text
        assert client.get("/healthz").status_code == 200  # the database answers; the table is what is gone


# ---- observability, spec, page ---------------------------------------------------------------------------------

def test_healthz_metrics_and_openapi(lstm, tmp_path):
    with TestClient(make_app(lstm, tmp_path / "e.db")) as client:
        health = client.get("/healthz").json()
        assert health == {"status": "ok", "database": "ok", "canary": "ok: 10 items for a 5-item history",
                          "models": {"lstm": "MultimodalLSTM"},
                          "catalog_items": len(lstm.catalog), "pid": os.getpid()}
        client.post("/recommendations", json={"history": [1], "k": 3})
        client.get("/users/zed/recommendations")
        text = client.get("/metrics").text
        assert metric(text, 'dualrec_http_requests_total{method="POST",route="/recommendations",status="200"}') == 1
        assert metric(text, 'dualrec_http_requests_total{method="GET",route="/users/{user_id}/recommendations",'
                             'status="404"}') == 1
        assert metric(text, 'dualrec_http_request_duration_seconds_count{method="POST",route="/recommendations"}') == 1
        assert "# TYPE dualrec_llm_fallbacks_total counter" in text
        spec = client.get("/openapi.json").json()
        model_param = next(p for p in spec["paths"]["/users/{user_id}/recommendations"]["get"]["parameters"]
                           if p["name"] == "model")
        schema = model_param["schema"]  # one allowed value is a JSON-schema const, several an enum
        assert schema.get("enum", [schema.get("const")]) == ["lstm"] and "--dualrec" in model_param["description"]
        assert {"/users/{user_id}/events", "/users/{user_id}/recommendations", "/recommendations", "/healthz",
                "/metrics"} <= set(spec["paths"])
        assert client.get("/").headers["content-type"].startswith("text/html")
        items = client.get("/items", params={"q": "toy story"}).json()["items"]
        assert items and all("toy story" in i["title"].lower() for i in items)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_web_page_in_headless_chromium(lstm, model_dir, tmp_path):
    """A person's path through the page in real Chromium: pick movies, get the LSTM's list; ask DUALRec and see its
    fallback said; see a refused request's reason; switch to a stored user, whose picks become events."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian package `chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) not installed")
    # the DUALRec slot: a real model under a budget it cannot meet, so the page must show the fallback
    app = make_app(lstm, tmp_path / "e.db", limits=NO_RATE, recommenders={"dualrec": load_recommender(model_dir)},
                   llm_budget_s=0.0, llm_max_batch=8)
    with uvicorn_server(app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)  # a fresh profile dir
        try:
            page = browser.new_page()
            page.goto(url + "/")

            def pick(query: str) -> int:
                page.fill("#search", query)
                page.wait_for_function("q => document.querySelector('#results button')?.textContent.includes(q)",
                                       arg=query)
                first = page.locator("#results button").first
                item = int(first.get_attribute("data-item"))
                first.click()
                return item

            def shown() -> list[int]:
                return [int(x) for x in page.locator("#recs li").evaluate_all("els => els.map(e => e.dataset.item)")]

            picked = [pick("Toy Story"), pick("Star Wars")]
            page.wait_for_function("() => document.querySelectorAll('#watched li').length === 2")
            page.fill("#k", "8")
            page.click("#recommend")
            page.wait_for_selector("#answer:not([hidden]) #recs li")
            lstm_list = lstm.recommend([np.array(picked)], 8).items[0].tolist()
            assert shown() == lstm_list
            assert page.locator("#fallback").is_hidden() and page.inner_text("#lstm-suggestion") == "-"

            page.select_option("#model", "dualrec")
            page.click("#recommend")
            page.wait_for_selector("#fallback:not([hidden])")
            assert "time budget" in page.inner_text("#fallback") and shown() == lstm_list

            page.fill("#k", "500")
            page.click("#recommend")
            page.wait_for_selector("#error:not([hidden])")
            assert page.inner_text("#error") == "422: Input should be less than or equal to 100"

            # stored-user mode: the page shows the stored history, picks become events, the answer uses them
            heat = int(lstm.catalog.ground("Heat (1995)").item)
            app.state.store.append("web-user", [heat], [1.0])
            page.fill("#k", "5")
            page.select_option("#model", "lstm")
            page.fill("#user", "web-user")
            page.dispatch_event("#user", "change")
            page.wait_for_function("() => document.querySelector('#watched li')?.textContent.startsWith('Heat')")
            fargo = pick("Fargo")
            page.wait_for_function("() => document.querySelectorAll('#watched li').length === 2")
            assert app.state.store.history("web-user")[0] == [heat, fargo]
            page.click("#recommend")
            page.wait_for_function("n => document.querySelectorAll('#recs li').length === n", arg=5)
            assert shown() == lstm.recommend([np.array([heat, fargo])], 5).items[0].tolist()
        finally:
            browser.close()
