"""Adaptive micro-batching: concurrent requests for one model are answered by one ``recommend`` call.

A request puts ``(history, k)`` on the model's queue and awaits a future. One worker task per model takes the first
waiting request together with every request already waiting behind it (up to ``max_batch``) and runs
``recommend(histories, max k)`` in the model's own single thread (so the event loop keeps accepting requests, and
two calls never share one model at once). A request that finds the queue empty is therefore answered at once: no
batching delay for a lone client. Under load, requests arrive while a call runs and form the next batch, so the
batch grows with load by itself. Under load (the batch has company, or the call before it had), the batch waits up
to ``max_wait_s`` for more (the server's default is 5 ms): a request that arrives alone just after a full batch then
joins the requests close behind it instead of taking a call of its own. A client alone, whose previous call was a
batch of one, never waits. A caller that gave up (its future was cancelled, e.g. by a time budget) is
dropped from the batch before the call, so a slow model does not pile up work nobody waits for.

A caller may also give a ``deadline``. The batcher keeps a running estimate of how long one call takes (an
exponential average); a request that would still be waiting when its deadline passes is answered at once with
:class:`WouldMissDeadline` instead of joining the call, so the caller can fall back now rather than at the deadline,
and the model does not spend a call on it. The estimate only applies while it is fresh (a call ended within the last
``probe_after_s``); after that one batch runs anyway and refreshes it, so a passing slowdown is not remembered for
ever.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dualrec.models.base import Recommender
    from dualrec.serve.metrics import Metrics


@dataclass
class Ranked:
    """One request's answer: items and scores best first, the model's extras for this history."""

    items: np.ndarray
    scores: np.ndarray
    extras: dict
    batch_size: int
    model_seconds: float


class WouldMissDeadline(Exception):
    """The request's deadline would pass before a model call could answer it; ``seconds`` is the estimate."""

    def __init__(self, seconds: float):
        super().__init__(f"one call takes about {seconds:.1f}s")
        self.seconds = seconds


@dataclass
class _Pending:
    history: np.ndarray
    k: int
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic() by which the caller needs the answer


class MicroBatcher:
    """Groups concurrent ``submit`` calls for one :class:`~dualrec.models.base.Recommender` into batched calls."""

    def __init__(self, model: "Recommender", name: str, max_batch: int = 32, max_wait_s: float = 0.0,
                 metrics: "Metrics | None" = None, probe_after_s: float = 30.0):
        self.model, self.name = model, name
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.metrics = metrics
        self.probe_after_s = probe_after_s
        self.call_seconds: float | None = None  # running estimate of one call's duration
        self._last_call_end = float("-inf")
        self._last_batch_size = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, history: np.ndarray, k: int, deadline: float | None = None) -> Ranked:
        """Rank for one history; resolved by the next batched call. With ``deadline`` (``time.monotonic()``), raises
        :class:`WouldMissDeadline` as soon as the call would end after it."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(), name=f"batcher-{self.name}")
        future = loop.create_future()
        self._queue.put_nowait(_Pending(np.asarray(history, dtype=np.int64), k, future, deadline))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        self._take_waiting(batch)
        under_load = len(batch) > 1 or self._last_batch_size > 1  # company now, or in the call just made
        if under_load and self.max_wait_s > 0:  # a little longer for more company
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch and (remaining := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
        return self._refuse_late([p for p in batch if not p.future.done()])

    def _take_waiting(self, batch: list[_Pending]) -> None:
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    def _refuse_late(self, batch: list[_Pending]) -> list[_Pending]:
        """Answer with :class:`WouldMissDeadline` the requests the next call would answer too late."""
        now = time.monotonic()
        if self.call_seconds is None or now - self._last_call_end >= self.probe_after_s:
            return batch
        for p in batch:
            if p.deadline is not None and now + self.call_seconds > p.deadline:
                p.future.set_exception(WouldMissDeadline(self.call_seconds))
        return [p for p in batch if not p.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            k = max(p.k for p in batch)
            start = time.perf_counter()
            try:
                recs = await loop.run_in_executor(self._executor, self.model.recommend, [p.history for p in batch], k)
            except Exception as exc:  # the model failed: every waiting caller hears it, the worker keeps going
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - start
            self._last_batch_size = len(batch)
            self.call_seconds = seconds if self.call_seconds is None else 0.7 * self.call_seconds + 0.3 * seconds
            self._last_call_end = time.monotonic()
            if self.metrics is not None:
                self.metrics.model_calls.observe(len(batch), self.name)
                self.metrics.model_seconds.observe(seconds, self.name)
            for i, p in enumerate(batch):
                if not p.future.done():
                    extras = (recs.extras[i] if recs.extras is not None else None) or {}
                    p.future.set_result(Ranked(recs.items[i][: p.k], recs.scores[i][: p.k], extras, len(batch),
                                               seconds))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
