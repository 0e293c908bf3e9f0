"""The recommendation service: FastAPI app factory (``create_app``) over a trained run and an event store.

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /users/{user_id}/events`` append watch events (item id or title, timestamp); titles ground through the
  :class:`~dualrec.data.catalog.Catalog`; anything that names no catalog item is a 422 that lists it (in FastAPI's
  validation-error shape, with ``loc`` pointing at the event). Committed before
  the 201 answer; an ``Idempotency-Key`` header makes retries safe (the replay answers 200 with the first answer).
* ``GET /users/{user_id}/events`` the stored history, oldest first (empty for an unknown user).
* ``GET /users/{user_id}/recommendations?k=10&model=lstm|dualrec`` ranks from the *stored* history, so an event
  changes the next answer at once.
* ``POST /recommendations`` the same for an ad-hoc history (ids or titles), no stored user.
* ``GET /items?q=`` catalog search (the web page's picker); ``GET /healthz``; ``GET /metrics`` (Prometheus text);
  ``GET /`` a small web page (``static/``, no build step).

Design choices where the issue is silent:

* **Two run folders.** ``model`` is the fast ranker (any Recommender, normally the Stage-1 LSTM) and the fallback;
  ``dualrec`` (optional) is the hybrid. Without ``model``, the hybrid's own Stage 1 is the ranker (loaded once).
  The spec's ``model`` enum lists the loaded models only, so ``model=dualrec`` on a server without the hybrid is a
  plain 422, and the field's description says how to load it.
* **LLM time budget.** The budget counts from the moment a request starts waiting for the hybrid (queueing
  included), because that is the latency a client sees. On expiry the request is answered with the LSTM ranking and
  ``"fallback": true`` plus the reason, and leaves the hybrid's queue (a batch not yet started drops it). A batch
  already running cannot be interrupted (the LLM call is in a thread), so hybrid batches are small
  (``llm_max_batch``, 1 by default: llama.cpp generates one prompt at a time anyway; raise it for a backend that
  batches generation): little work is wasted when its callers have given up. When recent hybrid calls show that a request cannot finish within its budget, it falls back at
  once (reason ``predicted``) instead of waiting out the budget. A hybrid that raises also falls back (reason given, error logged); a hybrid's own fallback flag
  is passed through.
* **Unknown users** (no stored event) get 404 instead of a cold-start list: a silent popularity list for a typo'd id
  would hide the typo. ``POST /recommendations`` with an empty history is the explicit cold-start call.
* Every error answer is JSON ``{"detail": ...}`` (FastAPI's convention); a server error says only that it happened
  and its log id, never a stack trace.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the endpoint annotations, which name
# classes local to create_app.
import asyncio
import dataclasses
import functools
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Union

import numpy as np

from dualrec.serve.limits import Limits

if TYPE_CHECKING:
    from fastapi import FastAPI

    from dualrec.models.base import Recommender

log = logging.getLogger("dualrec.serve")
STATIC_DIR = Path(__file__).parent / "static"
SETTINGS_ENV = "DUALREC_SERVE_SETTINGS"
USER_ID_PATTERN = r"^[A-Za-z0-9_.@:\-]{1,128}$"


@dataclass
class ServeSettings:
    """Everything ``dualrec serve`` configures; JSON-able so uvicorn worker processes get the same settings."""

    model: str | None                   # run/model folder of the ranker and fallback (None: DUALRec's Stage 1)
    dualrec: str | None = None          # run folder of the DUALRec hybrid, optional
    db: str = "dualrec-events.db"       # SQLite file path, or a database URL (postgresql://user@host:port/db)
    llm_budget_s: float = 5.0           # per-request time budget of the hybrid before falling back
    max_batch: int = 32                 # most requests one model call answers
    llm_max_batch: int = 1              # ... for DUALRec (llama.cpp generates one prompt at a time anyway)
    batch_wait_ms: float = 5.0          # how long the first request of a batch waits for others
    torch_threads: int = 1              # intra-op threads of a server process (0: torch's default); see set_threads
    limits: Limits = field(default_factory=Limits)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        values = json.loads(text)
        limits = values.pop("limits", {})
        limits["exempt_paths"] = tuple(limits.get("exempt_paths", Limits.exempt_paths))
        return cls(**values, limits=Limits(**limits))


def load_recommender(path: str | Path) -> "Recommender":
    """A run folder of ``dualrec train`` (``experiment.yaml`` + ``model/``) or a saved model folder."""
    path = Path(path)
    if (path / "experiment.yaml").exists():
        from dualrec.experiment import load_run

        return load_run(path)[1]
    from dualrec.models.base import Recommender

    return Recommender.load(path)


def create_app(settings: ServeSettings, recommenders: dict[str, "Recommender"] | None = None) -> "FastAPI":
    """Build the app. Models load now (from ``settings`` unless given in ``recommenders``, keys ``lstm`` and
    ``dualrec``); the event store opens (and is created) when the app starts serving."""
    from fastapi import FastAPI, Header, HTTPException, Path as PathParam, Query, Request, Response
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field, StrictInt, model_validator

    from dualrec.serve.batching import MicroBatcher, Ranked, WouldMissDeadline
    from dualrec.serve.limits import BodySizeLimitMiddleware, RateLimitMiddleware
    from dualrec.serve.metrics import Metrics, MetricsMiddleware
    from dualrec.serve.store import EventStore, IdempotencyConflict, request_hash

    limits = settings.limits
    recommenders = dict(recommenders or {})
    given = set(recommenders)  # the caller's models: the app does not close them
    if "dualrec" not in recommenders and settings.dualrec:
        recommenders["dualrec"] = load_recommender(settings.dualrec)
    if "lstm" not in recommenders:
        if settings.model:
            recommenders["lstm"] = load_recommender(settings.model)
        elif getattr(recommenders.get("dualrec"), "stage1", None) is not None:
            recommenders["lstm"] = recommenders["dualrec"].stage1  # DUALRec's own Stage 1 ranks and falls back
        else:
            raise ValueError("the service needs --model (a ranker run folder) or --dualrec (whose Stage 1 is used)")
    ranker = recommenders["lstm"]
    catalog = ranker.catalog
    item_info = functools.lru_cache(maxsize=None)(catalog.describe)  # pandas lookups once per item, not per answer
    metrics = Metrics()
    wait_s = settings.batch_wait_ms / 1000.0
    batchers = {name: MicroBatcher(m, name, settings.llm_max_batch if name == "dualrec" else settings.max_batch,
                                   wait_s, metrics) for name, m in recommenders.items()}

    # ---- request / response schemas ------------------------------------------------------------------------

    # The models this server has loaded, as the spec's enum: asking for one it lacks is a plain validation error.
    ModelName = Literal[tuple(batchers)]  # noqa: N806 - a type
    model_doc = ("Which model ranks: " + ", ".join(batchers) +
                 ("" if "dualrec" in batchers else " (dualrec needs `dualrec serve --dualrec RUN`)"))
    bad_body = {400: {"description": "The body is not parseable (FastAPI)"}}

    class EventIn(BaseModel):
        """One watch event: exactly one of ``item`` (catalog id) or ``title`` (free text, grounded)."""

        item: StrictInt | None = Field(None, examples=[1193])
        title: str | None = Field(None, min_length=1, max_length=300, examples=["One Flew Over the Cuckoo's Nest"])
        timestamp: datetime | float | None = Field(
            None, description="Epoch seconds or ISO 8601 (UTC without an offset); default: when the server "
                              "receives it.")

        @model_validator(mode="after")
        def _one_reference(self):
            if (self.item is None) == (self.title is None):
                raise ValueError("give exactly one of 'item' or 'title'")
            return self

    class EventsIn(BaseModel):
        events: list[EventIn] = Field(min_length=1, max_length=limits.max_events_per_post)

    class HistoryIn(BaseModel):
        history: list[Union[StrictInt, str]] = Field(
            default_factory=list, max_length=limits.max_history,
            description="Watched items oldest first: catalog ids (numbers) or titles (strings).")
        k: StrictInt = Field(10, ge=1, le=limits.max_k)
        model: ModelName = Field("lstm", description=model_doc)

    class ItemOut(BaseModel):
        rank: int
        item: int
        title: str
        year: int | None
        genres: list[str]
        score: float

    class RecommendationsOut(BaseModel):
        model: str
        items: list[ItemOut]
        history_length: int
        lstm_suggestion: str | None = Field(None, description="DUALRec: the LSTM's suggestion put in the prompt.")
        llm_text: str | None = Field(None, description="DUALRec: what the LLM wrote.")
        fallback: bool = Field(False, description="True when the answer is the LSTM ranking instead of DUALRec's.")
        fallback_reason: str | None = None
        batch_size: int = Field(description="Requests answered by the same model call.")
        timings_ms: dict[str, float]
        user: str | None = None

    class EventsOut(BaseModel):
        user: str
        stored: int
        history_length: int
        events: list[dict]
        replayed: bool = False

    # ---- helpers ---------------------------------------------------------------------------------------------

    def resolve(refs: list[Union[int, str]], loc: Callable[[int, str], list]) -> np.ndarray:
        """Catalog ids for ids/titles; one 422 naming every reference that matches no catalog item, in FastAPI's
        validation-error shape (``loc``, ``msg``, ``type``, ``input``) so clients parse every 422 the same way."""
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
        if texts:
            for i, g in zip(texts, catalog.ground_many([refs[i] for i in texts])):
                if g.item is None:
                    unknown.append({"type": "unknown_title", "loc": loc(i, "title"), "input": refs[i],
                                    "msg": f"no catalog film matches {refs[i]!r} ({g.why})"})
                else:
                    ids[i] = g.item
        if unknown:
            raise HTTPException(422, sorted(unknown, key=lambda u: u["loc"][2]))
        return ids

    def describe(ranked: Ranked) -> list[dict]:
        return [{"rank": r, **item_info(int(i)), "score": float(s)}
                for r, (i, s) in enumerate(zip(ranked.items, ranked.scores), 1)]

    async def rank(history: np.ndarray, k: int, model: str) -> dict:
        start = time.perf_counter()
        fallback, reason = False, None
        if model == "lstm":
            ranked = await batchers["lstm"].submit(history, k)
        else:
            try:
                deadline = time.monotonic() + settings.llm_budget_s
                ranked = await asyncio.wait_for(batchers["dualrec"].submit(history, k, deadline),
                                                settings.llm_budget_s)
                if ranked.extras.get("answered") is False:
                    why = ranked.extras.get("error") or "no usable LLM output"
                    fallback, reason = True, f"DUALRec used its LSTM ranking: {why}"
                    metrics.fallbacks.inc("model")
                    if not ranked.extras.get("fallback"):   # a model without fallback="stage1" left the list empty:
                        lstm = await batchers["lstm"].submit(history, k)   # the LSTM's list, the LLM's text kept
                        ranked = dataclasses.replace(lstm, extras=ranked.extras)
            except TimeoutError:
                fallback, reason = True, f"LLM time budget of {settings.llm_budget_s:g}s exceeded; LSTM ranking"
                metrics.fallbacks.inc("budget")
                ranked = await batchers["lstm"].submit(history, k)
            except WouldMissDeadline as exc:
                fallback, reason = True, (f"LLM time budget of {settings.llm_budget_s:g}s would be exceeded ({exc}); "
                                          "LSTM ranking")
                metrics.fallbacks.inc("predicted")
                ranked = await batchers["lstm"].submit(history, k)
            except Exception:
                log.exception("dualrec model failed; answering with the LSTM ranking")
                fallback, reason = True, "the DUALRec model failed; LSTM ranking"
                metrics.fallbacks.inc("error")
                ranked = await batchers["lstm"].submit(history, k)
        extras = ranked.extras
        items = describe(ranked)
        suggestion = extras.get("lstm_title")
        if suggestion is None and model == "dualrec" and items:  # answered by the LSTM: its top-1 is the suggestion
            suggestion = items[0]["title"]
        return {"model": model, "items": items, "history_length": int(len(history)),
                "lstm_suggestion": _text(suggestion), "llm_text": _text(extras.get("llm_text")),
                "fallback": fallback, "fallback_reason": reason, "batch_size": ranked.batch_size,
                "timings_ms": {"model": round(ranked.model_seconds * 1000, 3),
                               "total": round((time.perf_counter() - start) * 1000, 3)}}

    # ---- app ---------------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = await run_in_threadpool(EventStore, settings.db)
        log.info("event store %s ready; models: %s", app.state.store.url.split("@")[-1], sorted(recommenders))
        try:
            yield
        finally:
            for b in batchers.values():
                await b.close()
            for name, m in recommenders.items():
                if name not in given and callable(getattr(m, "close", None)):  # e.g. DUALRec frees its LLM
                    m.close()
            app.state.store.close()

    app = FastAPI(title="dualrec service", version="0.1.0", lifespan=lifespan,
                  description="Watch events in, recommendations out (LSTM or DUALRec), nothing lost.")
    app.state.settings, app.state.metrics, app.state.recommenders = settings, metrics, recommenders

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.error("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal server error (log reference {ref})"}, status_code=500)

    @app.post("/users/{user_id}/events", status_code=201, response_model=EventsOut,
              responses={200: {"description": "Replay of an earlier post with the same Idempotency-Key"},
                         409: {"description": "Idempotency-Key reused with a different body"}, **bad_body,
                         422: {"description": "Unknown items or invalid input"}})
    def post_events(body: EventsIn, response: Response,
                    user_id: str = PathParam(pattern=USER_ID_PATTERN),
                    idempotency_key: str | None = Header(None, min_length=1, max_length=255)):
        """Append watch events; committed to the database before this answers."""
        items = resolve([e.item if e.item is not None else e.title for e in body.events],
                        lambda i, field: ["body", "events", i, field])
        now = time.time()
        stamps = [now if e.timestamp is None else _epoch(e.timestamp) for e in body.events]
        fingerprint = request_hash(body.model_dump(mode="json"))
        try:
            result = app.state.store.append(user_id, items.tolist(), stamps, idempotency_key, fingerprint)
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        if result.replayed:
            response.status_code = 200
        else:
            metrics.events.inc(amount=result.response["stored"])
        out = dict(result.response, replayed=result.replayed)
        for e in out["events"]:
            e["title"] = catalog.title(e["item"])
        return out

    @app.get("/users/{user_id}/events")
    def get_events(user_id: str = PathParam(pattern=USER_ID_PATTERN),
                   limit: int = Query(limits.max_history, ge=1, le=limits.max_history)):
        """The user's stored history, oldest first (the newest ``limit`` events): what recommendations use."""
        items, stamps = app.state.store.history(user_id, limit)
        return {"user": user_id, "events": [{**item_info(i), "timestamp": t} for i, t in zip(items, stamps)]}

    @app.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
             responses={404: {"description": "No stored events for this user"}})
    async def user_recommendations(user_id: str = PathParam(pattern=USER_ID_PATTERN),
                                   k: int = Query(10, ge=1, le=limits.max_k),
                                   model: ModelName = Query("lstm", description=model_doc)):
        """Recommendations from the user's stored history (the newest ``max_history`` events)."""
        items, _ = await run_in_threadpool(app.state.store.history, user_id, limits.max_history)
        if not items:
            raise HTTPException(404, f"no stored events for user {user_id!r}; POST /users/{user_id}/events first "
                                     "(or POST /recommendations with a history)")
        return dict(await rank(np.asarray(items, dtype=np.int64), k, model), user=user_id)

    @app.post("/recommendations", response_model=RecommendationsOut, responses=bad_body)
    async def adhoc_recommendations(body: HistoryIn):
        """Recommendations for a history given in the request (ids or titles), nothing stored."""
        return await rank(resolve(body.history, lambda i, _: ["body", "history", i]), body.k, body.model)

    @app.get("/items")
    def search_items(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=200)):
        """Catalog items whose title contains ``q`` (case-insensitive), for pickers."""
        titles = catalog.items["title"]
        hits = catalog.items.index[titles.str.contains(q, case=False, regex=False)] if q else catalog.items.index
        return {"items": [item_info(int(catalog.ids[r])) for r in hits[:limit]], "total": int(len(hits))}

    @app.get("/healthz")
    def healthz():
        try:
            db_ok = app.state.store.ping()
        except Exception:
            log.exception("health check: database unreachable")
            db_ok = False
        body = {"status": "ok" if db_ok else "degraded", "database": "ok" if db_ok else "unreachable",
                "models": {name: type(m).__name__ for name, m in recommenders.items()}, "catalog_items": len(catalog),
                "pid": os.getpid()}
        return JSONResponse(body, status_code=200 if db_ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus_metrics():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Outermost last: metrics sees every answer, including limit refusals.
    app.add_middleware(RateLimitMiddleware, limits=limits, on_reject=metrics.rejected.inc)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=limits.max_body_bytes, on_reject=metrics.rejected.inc)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _epoch(value: datetime | float) -> float:
    """Epoch seconds; an ISO time without an offset is UTC (never the server's local zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)


def _text(value) -> str | None:
    return None if value is None else str(value)


def set_threads(settings: ServeSettings) -> None:
    """Set torch's intra-op threads for a server *process* (never in ``create_app``: it is process-wide state).

    One thread by default: the event loop needs a core too, and on a busy 2-core machine two OpenMP threads spin
    against other processes: one LSTM call for one history took 1,400 ms with 2 threads and 9 ms with 1 at load 15
    (see docs/service.md). Several workers (or a bigger machine) scale by processes, not threads.
    """
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)


def app_from_env() -> "FastAPI":
    """Factory for uvicorn worker processes (``--workers N``): settings come from ``$DUALREC_SERVE_SETTINGS``."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    set_threads(settings)
    return create_app(settings)


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the app under uvicorn (blocking). Several workers need a database several processes can share."""
    import uvicorn

    if workers > 1:
        os.environ[SETTINGS_ENV] = settings.to_json()
        # Each worker loads torch and the models before it answers uvicorn's health pings; on a busy machine that
        # can take longer than uvicorn's 5 s default, and the supervisor would kill a healthy worker mid-start.
        uvicorn.run("dualrec.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, timeout_worker_healthcheck=120)
    else:
        set_threads(settings)
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
