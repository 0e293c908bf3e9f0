"""Prometheus metrics in the text exposition format (version 0.0.4), kept in-process.

A few counters and histograms are all the service needs, so they are written here (about a hundred lines) instead
of adding ``prometheus_client``: one :class:`Metrics` object per app, so several apps in one test process do not
share a global registry. Labels are the route *template* (``/users/{user_id}/events``), never the raw path, so a
million users do not make a million series.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for n, v in zip(names, values))
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def inc(self, *labels, amount: float = 1.0) -> None:
        with self._lock:
            self.values[tuple(labels)] += amount

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for key, v in sorted(self.values.items()):
                out.append(f"{self.name}{_labels(self.label_names, key)} {v:g}")
        return out


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()):
        self.name, self.help, self.buckets, self.label_names = name, help, tuple(buckets), labels
        self.counts: dict[tuple, list[int]] = {}
        self.sums: dict[tuple, float] = defaultdict(float)
        self._lock = threading.Lock()

    def observe(self, value: float, *labels) -> None:
        key = tuple(labels)
        with self._lock:
            counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sums[key] += value

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for key in sorted(self.counts):
                cumulative = 0
                for bound, c in zip(self.buckets + (float("inf"),), self.counts[key]):
                    cumulative += c
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    out.append(f"{self.name}_bucket{_labels(self.label_names + ('le',), key + (le,))} {cumulative}")
                out.append(f"{self.name}_sum{_labels(self.label_names, key)} {self.sums[key]:.6f}")
                out.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return out


class Metrics:
    """Everything ``GET /metrics`` shows."""

    def __init__(self):
        self.started = time.time()
        self.requests = Counter("dualrec_http_requests_total", "HTTP requests by method, route template and status.",
                                ("method", "route", "status"))
        self.latency = Histogram("dualrec_http_request_duration_seconds", "HTTP request latency by route template.",
                                 LATENCY_BUCKETS, ("method", "route"))
        self.model_calls = Histogram("dualrec_model_batch_size", "Requests answered by one model call.",
                                     BATCH_BUCKETS, ("model",))
        self.model_seconds = Histogram("dualrec_model_call_duration_seconds", "Seconds per batched model call.",
                                       LATENCY_BUCKETS, ("model",))
        self.fallbacks = Counter("dualrec_llm_fallbacks_total", "DUALRec answers given as the LSTM ranking, by reason "
                                 "(budget: time ran out; predicted: recent calls show it would; model: DUALRec's own "
                                 "fallback; error: DUALRec raised).",
                                 ("reason",))
        self.events = Counter("dualrec_events_stored_total", "Watch events committed to the store.")
        self.rejected = Counter("dualrec_requests_rejected_total", "Requests refused by input limits.", ("reason",))

    def render(self) -> str:
        lines = ["# HELP dualrec_uptime_seconds Seconds since the app started.", "# TYPE dualrec_uptime_seconds gauge",
                 f"dualrec_uptime_seconds {time.time() - self.started:.3f}"]
        for m in (self.requests, self.latency, self.model_calls, self.model_seconds, self.fallbacks, self.events,
                  self.rejected):
            lines += m.render()
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request (rejected ones too) by route template and status."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.inc(scope["method"], template, status["code"])
            self.metrics.latency.observe(time.perf_counter() - start, scope["method"], template)
