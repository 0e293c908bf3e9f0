"""From a request's references to an answer: catalog ids for ids and titles, the ranking (LSTM, or DUALRec under its
time budget with the LSTM as fallback) and the JSON views of items and stored events.

The LLM time budget counts from the moment a request starts waiting for the hybrid (queueing included), because
that is the latency a client sees. On expiry the request is answered with the LSTM ranking and ``"fallback": true``
plus the reason, and leaves the hybrid's queue (a batch not yet started drops it). When recent hybrid calls show that
a request cannot finish within its budget, it falls back at once (reason ``predicted``). A hybrid that raises also
falls back (reason given, error logged); a hybrid's own fallback flag is passed through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from dualrec.serve.batching import Ranked, WouldMissDeadline
from dualrec.serve.deployment import Deployment

log = logging.getLogger("dualrec.serve")


class UnknownReferences(Exception):
    """References that name no catalog item, as FastAPI-shaped validation errors (``loc``, ``msg``, ``type``,
    ``input``), so clients parse every 422 the same way."""

    def __init__(self, errors: list[dict]):
        super().__init__(f"{len(errors)} unknown item reference(s)")
        self.errors = errors


def resolve(catalog, refs: list[Union[int, str]], loc: Callable[[int, str], list]) -> np.ndarray:
    """Catalog ids for ids/titles; raises :class:`UnknownReferences` naming every one that matches no item."""
    ids = np.zeros(len(refs), dtype=np.int64)
    unknown = []
    numeric = [i for i, r in enumerate(refs) if isinstance(r, int)]
    if numeric:
        values = np.array([refs[i] for i in numeric], dtype=np.int64)
        ids[numeric] = values
        unknown += [{"type": "unknown_item", "loc": loc(numeric[j], "item"), "input": int(values[j]),
                     "msg": f"item id {int(values[j])} is not in the model's catalog"}
                    for j in np.flatnonzero(~catalog.has(values))]
    texts = [i for i, r in enumerate(refs) if isinstance(r, str)]
    for i, grounded in zip(texts, catalog.ground_many([refs[i] for i in texts]) if texts else []):
        if grounded.item is None:
            unknown.append({"type": "unknown_title", "loc": loc(i, "title"), "input": refs[i],
                            "msg": f"no catalog film matches {refs[i]!r} ({grounded.why})"})
        else:
            ids[i] = grounded.item
    if unknown:
        raise UnknownReferences(sorted(unknown, key=lambda u: u["loc"][2]))
    return ids


def event_view(deployment: Deployment, item: int, timestamp: float) -> dict:
    """A stored event with its item's details, or ``"known": false`` when the current catalog lacks the item."""
    stamp = timestamp if math.isfinite(timestamp) else None   # rows an older version stored without the check
    if item in deployment.catalog:
        return {**deployment.item_info(int(item)), "timestamp": stamp, "known": True}
    return {"item": int(item), "title": None, "year": None, "genres": [], "timestamp": stamp, "known": False}


def known_history(deployment: Deployment, items: list[int]) -> tuple[np.ndarray, int]:
    """The stored items the catalog has, and how many it lacks."""
    history = np.asarray(items, dtype=np.int64)
    known = deployment.catalog.has(history) if len(history) else np.zeros(0, bool)
    return history[known], int((~known).sum())


@dataclass
class HybridOutcome:
    """What the DUALRec path gave: its ranking (None: the LSTM must answer), its extras, and why it fell back."""

    ranked: Ranked | None
    extras: dict
    reason: str | None = None       # the fallback metric's label
    message: str | None = None      # the answer's fallback_reason


async def rank_hybrid(deployment: Deployment, history: np.ndarray, k: int, budget_s: float) -> HybridOutcome:
    budget = f"LLM time budget of {budget_s:g}s"
    try:
        ranked = await asyncio.wait_for(
            deployment.batchers["dualrec"].submit(history, k, time.monotonic() + budget_s), budget_s)
    except TimeoutError:
        return HybridOutcome(None, {}, "budget", f"{budget} exceeded; LSTM ranking")
    except WouldMissDeadline as exc:
        return HybridOutcome(None, {}, "predicted", f"{budget} would be exceeded ({exc}); LSTM ranking")
    except Exception:
        log.exception("dualrec model failed; answering with the LSTM ranking")
        return HybridOutcome(None, {}, "error", "the DUALRec model failed; LSTM ranking")
    if ranked.extras.get("answered") is not False:
        return HybridOutcome(ranked, ranked.extras)
    why = ranked.extras.get("error") or "no usable LLM output"
    # a model with fallback="stage1" ranked by its Stage 1 itself; otherwise its list is empty: the LSTM's list,
    # with the LLM's text kept
    return HybridOutcome(ranked if ranked.extras.get("fallback") else None, ranked.extras, "model",
                         f"DUALRec used its LSTM ranking: {why}")


async def rank(deployment: Deployment, history: np.ndarray, k: int, model: str, budget_s: float) -> dict:
    """The answer body of a recommendation request."""
    start = time.perf_counter()
    outcome = HybridOutcome(None, {})
    if model == "dualrec":
        outcome = await rank_hybrid(deployment, history, k, budget_s)
        if outcome.reason:
            deployment.metrics.fallbacks.inc(outcome.reason)
    ranked = outcome.ranked
    if ranked is None:
        ranked = dataclasses.replace(await deployment.batchers["lstm"].submit(history, k), extras=outcome.extras)
    items = [{"rank": r, **deployment.item_info(int(i)), "score": float(s)}
             for r, (i, s) in enumerate(zip(ranked.items, ranked.scores), 1)]
    suggestion = ranked.extras.get("lstm_title")
    if suggestion is None and model == "dualrec" and items:  # answered by the LSTM: its top-1 is the suggestion
        suggestion = items[0]["title"]
    return {"model": model, "items": items, "history_length": int(len(history)),
            "lstm_suggestion": _text(suggestion), "llm_text": _text(ranked.extras.get("llm_text")),
            "fallback": outcome.message is not None, "fallback_reason": outcome.message,
            "batch_size": ranked.batch_size,
            "timings_ms": {"model": round(ranked.model_seconds * 1000, 3),
                           "total": round((time.perf_counter() - start) * 1000, 3)}}


def _text(value) -> str | None:
    return None if value is None else str(value)
