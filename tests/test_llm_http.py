"""The OpenAI-compatible backend over real HTTP on 127.0.0.1.

* llama-cpp-python's own server on the embedded Gemma GGUF: a real round trip, same text as in-process llama.cpp.
* A small scripted server (http.server in a thread) for what a real LLM server will not do on demand: 429s, 5xx,
  slowness, garbage bodies; and the DUALRec pipeline's fallback and hallucination counting through ``evaluate``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from dualrec.llm.backends import OpenAICompatibleBackend, SamplingParams


class ScriptedServer:
    """``script(body) -> (status, payload, headers, delay_s)`` answers each POST; records requests and concurrency."""

    def __init__(self, script):
        self.script, self.requests, self.auth = script, [], []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.auth.append(self.headers.get("Authorization"))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    status, payload, headers, delay = outer.script(body)
                    time.sleep(delay)
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text):
    return 200, {"choices": [{"text": text, "finish_reason": "stop"}], "usage": {"completion_tokens": 5}}, {}, 0.0


@pytest.fixture
def scripted():
    servers = []

    def make(script):
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def backend(url, **kw):
    kw = {"max_retries": 3, "backoff": 0.01, "timeout": 5.0, **kw}
    return OpenAICompatibleBackend(url, "test-model", **kw)


def test_429_is_retried_with_backoff_then_succeeds(scripted):
    calls = iter([(429, {"error": "slow down"}, {"Retry-After": "0"}, 0.0)] * 2 + [completion("1. Heat (1995)")])
    srv = scripted(lambda body: next(calls))
    with backend(srv.url) as b:
        [c] = b.generate(["prompt"])
    assert c.ok and c.text == "1. Heat (1995)"
    assert len(srv.requests) == 3 and b.stats.retries == 2


def test_5xx_gives_up_after_retries_and_4xx_is_not_retried(scripted):
    srv = scripted(lambda body: (503, b"overloaded", {}, 0.0))
    with backend(srv.url, max_retries=2) as b:
        [c] = b.generate(["prompt"])
    assert not c.ok and "HTTP 503" in c.error and "3 attempts" in c.error
    assert len(srv.requests) == 3
    srv400 = scripted(lambda body: (400, {"error": "bad model"}, {}, 0.0))
    with backend(srv400.url) as b:
        [c] = b.generate(["prompt"])
    assert "HTTP 400" in c.error and len(srv400.requests) == 1


def test_timeout_server_down_and_garbage_are_errors_not_exceptions(scripted):
    slow = scripted(lambda body: (*completion("late")[:3], 1.5))
    with backend(slow.url, timeout=0.2, max_retries=0) as b:
        [c] = b.generate(["prompt"])
    assert c.error.endswith("timeout after 0.2s")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with backend(dead, max_retries=1) as b:
        [c] = b.generate(["prompt"])
    assert "connection error" in c.error
    garbage = scripted(lambda body: (200, b"<html>oops</html>", {}, 0.0))
    with backend(garbage.url) as b:
        [c] = b.generate(["prompt"])
    assert "malformed response" in c.error


def test_api_key_comes_from_the_environment_and_is_never_kept(scripted, tmp_path, monkeypatch):
    srv = scripted(lambda body: completion("ok"))
    b = backend(srv.url, api_key_env="DUALREC_TEST_KEY", cache=tmp_path / "c.sqlite")
    monkeypatch.delenv("DUALREC_TEST_KEY", raising=False)
    [c] = b.generate(["p1"])
    assert "DUALREC_TEST_KEY" in c.error and not srv.requests     # no key: clear error, no request sent
    monkeypatch.setenv("DUALREC_TEST_KEY", "sk-secret-123")
    [c] = b.generate(["p1"])
    assert c.ok and srv.auth == ["Bearer sk-secret-123"]
    assert "sk-secret" not in repr(b) and "sk-secret" not in json.dumps(b.identity())
    assert b"sk-secret" not in (tmp_path / "c.sqlite").read_bytes()
    b.close()


def test_cache_makes_a_rerun_free_and_is_keyed_by_sampling(scripted, tmp_path):
    srv = scripted(lambda body: completion(f"echo {body['prompt']} t={body['temperature']}"))
    with backend(srv.url, cache=tmp_path / "c.sqlite") as b:
        first = b.generate(["a", "b", "a"])                       # duplicate prompts are sent once
        assert len(srv.requests) == 2
        again = b.generate(["a", "b"])
        assert len(srv.requests) == 2 and all(c.cached for c in again)
        assert [c.text for c in again] == [first[0].text, first[1].text]
        hot = b.generate(["a"], SamplingParams(temperature=0.7))
        assert len(srv.requests) == 3 and hot[0].text == "echo a t=0.7"
    with backend(srv.url, cache=tmp_path / "c.sqlite") as b2:    # a new process would find it on disk
        assert b2.generate(["b"])[0].cached


def test_concurrency_is_bounded(scripted):
    srv = scripted(lambda body: (*completion("x")[:3], 0.3))
    with backend(srv.url, concurrency=2) as b:
        out = b.generate([f"p{i}" for i in range(6)])
    assert all(c.ok for c in out)
    assert srv.max_in_flight == 2


def test_chat_endpoint_sends_system_and_user_messages(scripted):
    srv = scripted(lambda body: (200, {"choices": [{"message": {"content": "- Heat (1995)"}}]}, {}, 0.0))
    with backend(srv.url, endpoint="chat", system="You are a helpful movie recommendation assistant.") as b:
        [c] = b.generate(["history..."], SamplingParams(max_new_tokens=300, temperature=0.7, top_p=0.9))
    assert c.text == "- Heat (1995)"
    body = srv.requests[0]
    assert body["messages"] == [{"role": "system", "content": "You are a helpful movie recommendation assistant."},
                                {"role": "user", "content": "history..."}]
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (300, 0.7, 0.9)


def test_dualrec_falls_back_per_user_and_counts_hallucinations(ml1m_small, scripted):
    """Six users, six server behaviours; every count below follows from the script, through the one evaluator."""
    from dualrec.evaluation.evaluator import evaluate
    from dualrec.evaluation.protocols import make_split
    from dualrec.llm.prompts import PromptBuilder
    from dualrec.models import build_model

    cat = ml1m_small.catalog
    split = make_split(ml1m_small.sequences(), "paper")
    cases = split.test.head(6)
    model = build_model("dualrec", {"stage1": "mostpop", "rerank": False, "cache": False, "fallback": "stage1"})
    model.fit(split.train, cat)
    s1 = model.stage1.recommend(cases.histories, 5)  # what the pipeline asks Stage 1 for at k=5
    prompts = [PromptBuilder(cat).prompt(h, r[0]) for h, r in zip(cases.histories, s1.items)]
    assert len(set(prompts)) == 6
    target0 = cat.title(cases.targets[0][0])
    miss4 = next(i for i in cat.ids if i not in cases.targets[4] and i not in cases.histories[4])
    script = {
        prompts[0]: completion(f"Sure! Here are three:\n1. {target0}\n2. The Expanse: Leviathan Wakes (2027)"),
        prompts[1]: (500, b"internal error", {}, 0.0),
        prompts[2]: completion(""),
        prompts[3]: completion("asdkjh qwe ??"),
        prompts[4]: completion(f"1. {cat.title(miss4)}"),
        prompts[5]: (429, {"error": "rate limited"}, {"Retry-After": "0"}, 0.0),
    }
    srv = scripted(lambda body: script[body["prompt"]])
    model.backend = backend(srv.url, max_retries=1)
    res = evaluate(model, cases, cat, ks=(1, 5), progress=False)
    extras = res.recommendations.extras
    assert [e["fallback"] for e in extras] == [False, True, True, True, False, True]
    assert res.counts["fallbacks"] == 4
    assert res.counts["generated_titles"] == 3 and res.counts["ungrounded_titles"] == 1
    assert res.metrics["hallucination_rate"] == pytest.approx(1 / 3)
    assert res.recommendations.items[0].tolist() == [cases.targets[0][0]]   # only the grounded title is ranked
    for i in (1, 2, 3, 5):                                                    # fallback = the Stage-1 ranking
        assert res.recommendations.items[i].tolist() == s1.items[i][:5].tolist()
    assert "HTTP 500" in extras[1]["error"] and "429" in extras[5]["error"]
    hits1 = [1.0, *[float(s1.items[i][0] in cases.targets[i]) for i in (1, 2, 3)], 0.0,
             float(s1.items[5][0] in cases.targets[5])]
    assert res.metrics["HR@1"] == pytest.approx(np.mean(hits1))
    assert set(res.recommendations.timings) == {"lstm", "prompt", "llm", "parse", "rerank"}
    # the results table's split: the users the LLM answered (0 and 4), their lists vs Stage 1's on the same users
    from dualrec.rows import answered_vs_stage1

    answered = answered_vs_stage1(model, res, (1, 5))
    assert answered["users"] == 2 and answered["llm"]["HR@1"] == pytest.approx(0.5)   # user 0 hits, user 4 misses
    assert answered["stage1"]["HR@1"] == pytest.approx(np.mean([float(s1.items[i][0] in cases.targets[i])
                                                                for i in (0, 4)]))
    assert res.counts["llm_answered"] == 2 and res.metrics["coverage"] == pytest.approx(2 / 6)

    # without the fallback (an "LLM" row): the four unanswered users get empty lists, no Stage-1 item; misses
    model.config.fallback = "none"
    srv.requests.clear()
    alone = evaluate(model, cases, cat, ks=(1, 5), progress=False)
    assert [e["answered"] for e in alone.recommendations.extras] == [True, False, False, False, True, False]
    assert [len(r) for r in alone.recommendations.items] == [1, 0, 0, 0, 1, 0]
    assert alone.counts["fallbacks"] == 0 and alone.counts["empty_lists"] == 4
    assert alone.metrics["HR@1"] == pytest.approx(1 / 6) and alone.metrics["coverage"] == pytest.approx(2 / 6)


# ---- a real OpenAI-compatible server: llama-cpp-python's, on the embedded model ---------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="needs the llamacpp extra")
    from dualrec.llm.hf import gemma_gguf_path

    log = tmp_path_factory.mktemp("llama-server") / "server.log"  # a file, not a pipe: a full pipe blocks it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gemma_gguf_path()),
                             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1",
                             "--n_ctx", "1024"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"llama_cpp.server did not come up in 120 s: {log.read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_real_round_trip_matches_in_process_llama_cpp(llama_server):
    from dualrec.llm.backends import LlamaCppBackend

    prompt = "Below is a user's movie watching history:\n- Toy Story (1995) (Animation)\n\nRecommendations:\n1."
    params = SamplingParams(max_new_tokens=8, stop=())
    with OpenAICompatibleBackend(llama_server, "gemma", extra_body={"repeat_penalty": 1.0}) as http:
        [c] = http.generate([prompt], params)
    assert c.ok and c.new_tokens == 8 and c.finish_reason == "length"
    with LlamaCppBackend(n_threads=1) as local:
        [d] = local.generate([prompt], params)
    assert c.text == d.text and c.text.strip()


def test_generation_stops_after_the_asked_titles_in_process_and_over_http(llama_server):
    """max_titles: llama.cpp stops streaming at the 2nd complete title line; the server cannot be told to, so its
    full answer is cut at the same place: both give the same text, and the in-process run generated fewer tokens."""
    from dualrec.llm.backends import LlamaCppBackend
    from dualrec.llm.parse import end_of_titles, extract_titles

    prompt = ("Below is a user's movie watching history:\n- Toy Story (1995) (Animation)\n- Aladdin (1992) "
              "(Animation)\n\nRecommend movies, one per line.\n\nRecommendations:\n1.")
    full = SamplingParams(max_new_tokens=60, stop=())
    short = SamplingParams(max_new_tokens=60, stop=(), max_titles=2)
    with LlamaCppBackend(n_threads=1) as local:
        [whole] = local.generate([prompt], full)
        [cut] = local.generate([prompt], short)
    assert len(extract_titles(whole.text)) > 2, whole.text          # the model would go on past two titles
    assert cut.finish_reason == "stop" and end_of_titles(cut.text, 2) == len(cut.text)
    assert whole.text.startswith(cut.text) and len(extract_titles(cut.text)) == 2
    assert cut.new_tokens < whole.new_tokens
    with OpenAICompatibleBackend(llama_server, "gemma", extra_body={"repeat_penalty": 1.0}) as http:
        [remote] = http.generate([prompt], short)
    assert remote.text == cut.text and remote.finish_reason == "stop"
