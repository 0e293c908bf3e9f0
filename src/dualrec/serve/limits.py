"""Input limits: history length, k, body size and a per-client rate limit, each refused with a clear 4xx.

Body size and rate are checked in ASGI middleware, before FastAPI reads or parses anything: a body over the limit is
refused with 413 from its ``Content-Length`` or, for a chunked upload, as soon as the bytes read pass the limit; a
client over its rate gets 429 with ``Retry-After``. The client is the socket's peer address (a proxy's
``X-Forwarded-For`` is not trusted: it is the client's to write). History length and k are checked by the endpoints
(422), since only they know which field is at fault.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from dualrec.serve.errors import send_error


@dataclass
class Limits:
    max_history: int = 500          # items in one ad-hoc history / newest stored events used
    max_k: int = 100                # longest list one request may ask for
    max_events_per_post: int = 1000
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 50.0        # sustained requests per second per client; 0 disables the limiter
    rate_burst: int = 100           # requests a client may send at once before the rate applies
    exempt_paths: tuple[str, ...] = ("/healthz", "/metrics")


class BodySizeLimitMiddleware:
    """413 for a request body over ``max_bytes``, declared (``Content-Length``) or streamed (chunked).

    A body is read here in full before the app sees it (it is at most ``max_bytes``, 64 KiB by default), so a
    chunked upload is refused as soon as it passes the limit, and the app gets the bytes it would have read.
    """

    def __init__(self, app, max_bytes: int, on_reject=None):
        self.app, self.max_bytes, self.on_reject = app, max_bytes, on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        parts, size = [], 0
        while not too_large:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            too_large = size > self.max_bytes
            if not message.get("more_body", False):
                break
        if too_large:
            if self.on_reject:
                self.on_reject("body_size")
            return await send_error(send, 413, f"request body over the limit of {self.max_bytes} bytes")
        body, delivered = b"".join(parts), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TokenBucketLimiter:
    """Per-key token buckets: ``burst`` tokens, refilled at ``rate`` per second. Thread-safe, bounded, O(1).

    Buckets are kept least recently used first. A bucket idle for ``burst / rate`` seconds is full again, exactly
    like a new one, so it is forgotten: each call drops such buckets from the front (each bucket is dropped at most
    once, so the work is constant per call on average). Past ``max_keys`` clients active at once, the least recently
    seen is forgotten too; it starts again with a full bucket, so a flood of addresses costs memory bounded by
    ``max_keys`` and never a scan.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000):
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self.idle_s = burst / rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last seen)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if a request may pass now (and counts it), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            passed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if passed else tokens, now)
            self._forget_idle(now)
            return 0.0 if passed else (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            _, last = next(iter(self._buckets.values()))
            if now - last < self.idle_s and len(self._buckets) <= self.max_keys:
                return
            self._buckets.popitem(last=False)


class RateLimitMiddleware:
    """429 with ``Retry-After`` when a client (peer address) exceeds its token bucket."""

    def __init__(self, app, limits: Limits, on_reject=None):
        self.app, self.limits, self.on_reject = app, limits, on_reject
        self.limiter = TokenBucketLimiter(limits.rate_per_s, limits.rate_burst) if limits.rate_per_s > 0 else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.limiter is None or scope["path"] in self.limits.exempt_paths:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.limiter.take(client)
        if wait > 0:
            if self.on_reject:
                self.on_reject("rate")
            retry = max(1, int(wait + 0.999))
            return await send_error(send, 429, f"rate limit of {self.limits.rate_per_s:g} requests/s (burst "
                                            f"{self.limits.rate_burst}) exceeded for client {client}; retry in {retry}s",
                                 {"retry-after": str(retry)})
        await self.app(scope, receive, send)
