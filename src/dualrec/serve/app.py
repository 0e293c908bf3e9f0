"""The recommendation service: the FastAPI app factory (``create_app``) over a trained run and an event store.

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``), each with the API-key scope it needs when keys are set:

* ``POST /users/{user_id}/events`` (``events:write``) append watch events (item id or title, timestamp); titles
  ground through the :class:`~dualrec.data.catalog.Catalog`; anything that names no catalog item is a 422 that lists
  it. Committed before the 201 answer; an ``Idempotency-Key`` header makes retries safe (the replay answers 200
  with the first answer).
* ``GET /users/{user_id}/events`` (``events:read``) the stored history, oldest first (empty for an unknown user);
  an item the current catalog lacks comes back with ``"known": false``.
* ``GET /users/{user_id}/recommendations?k=10&model=lstm|dualrec`` (``recommend``) ranks from the *stored* history,
  so an event changes the next answer at once. Unknown users (no stored event) get 404 instead of a cold-start
  list: a silent popularity list for a typo'd id would hide the typo.
* ``POST /recommendations`` (``recommend``) the same for an ad-hoc history (ids or titles), no stored user; an empty
  history is the explicit cold-start call.
* ``GET /items?q=`` (``recommend``) catalog search; ``POST /admin/reload`` (``admin``) swap in new run folders after
  their canary passes; ``GET /metrics`` (``admin``) Prometheus text; ``GET /healthz`` (open) database and a canary
  recommendation; ``GET /`` a small web page (``static/``, no build step).

Two run folders: ``model`` is the fast ranker (any Recommender, normally the Stage-1 LSTM) and the fallback;
``dualrec`` (optional) is the hybrid, whose own Stage 1 ranks when ``model`` is not given.
"""

# No ``from __future__ import annotations`` here: FastAPI resolves the endpoint annotations, some of which are
# built per app (schemas.request_schemas).
import logging
import os
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Header, HTTPException, Path as PathParam, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from dualrec.models.base import Recommender
from dualrec.serve import ranking
from dualrec.serve.auth import KEYS_ENV, ApiKeys, HostCheckMiddleware, require
from dualrec.serve.deployment import DeploymentSlot, ModelLoadError, build_deployment
from dualrec.serve.errors import EXCEPTION_HANDLERS, InternalErrorMiddleware, error_response
from dualrec.serve.limits import BodySizeLimitMiddleware, RateLimitMiddleware
from dualrec.serve.metrics import Metrics, MetricsMiddleware
from dualrec.serve.schemas import (IDEMPOTENCY_KEY_PATTERN, USER_ID_PATTERN, EventsOut, HistoryOut, ReloadIn,
                                   ReloadOut, RecommendationsOut, RequestSchemas, Utf8Text, request_schemas)
from dualrec.serve.settings import ServeSettings
from dualrec.serve.store import EventStore, IdempotencyConflict, request_hash

log = logging.getLogger("dualrec.serve")
STATIC_DIR = Path(__file__).parent / "static"
BAD_BODY = {400: {"description": "The body is not parseable"}}
UserId = PathParam(pattern=USER_ID_PATTERN)


def create_app(settings: ServeSettings, recommenders: dict[str, Recommender] | None = None) -> FastAPI:
    """Build the app. Models load and pass their canary now (from ``settings`` unless given in ``recommenders``,
    keys ``lstm`` and ``dualrec``; given models are never closed by the app); API keys are read now; the event
    store opens (and is created) when the app starts serving."""
    metrics = Metrics()
    slot = DeploymentSlot(build_deployment(settings, metrics, recommenders))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = await run_in_threadpool(EventStore, settings.db)
        try:
            yield
        finally:
            await slot.close()
            app.state.store.close()

    app = FastAPI(title="dualrec service", version="0.2.0", lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS,
                  description="Watch events in, recommendations out (LSTM or DUALRec), nothing lost.")
    app.state.settings, app.state.metrics, app.state.slot = settings, metrics, slot
    app.state.api_keys = ApiKeys.load(settings.api_key_file, os.environ.get(KEYS_ENV))
    schemas = request_schemas(settings.limits, tuple(slot.current.recommenders))
    app.add_exception_handler(ranking.UnknownReferences, lambda request, exc: error_response(422, exc.errors))
    add_event_routes(app, schemas)
    add_recommendation_routes(app, schemas)
    add_admin_routes(app)
    add_page_routes(app)
    add_middleware(app, settings, metrics)
    return app


def add_middleware(app: FastAPI, settings: ServeSettings, metrics: Metrics) -> None:
    """Innermost first: the error guard sits under the limits, metrics sees every answer, the Host check runs
    before anything else."""
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RateLimitMiddleware, limits=settings.limits, on_reject=metrics.rejected.inc)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.limits.max_body_bytes,
                       on_reject=metrics.rejected.inc)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.allowed_hosts, on_reject=metrics.rejected.inc)


def add_event_routes(app: FastAPI, schemas: RequestSchemas) -> None:
    EventsIn = schemas.events_in  # noqa: N806 - a type
    limits = app.state.settings.limits

    @app.post("/users/{user_id}/events", status_code=201, response_model=EventsOut, dependencies=[
        require("events:write")], responses={200: {"description": "Replay of an earlier post with the same "
                                                                  "Idempotency-Key"},
                                             409: {"description": "Idempotency-Key reused with a different body"},
                                             422: {"description": "Unknown items or invalid input"}, **BAD_BODY})
    async def post_events(body: EventsIn, response: Response, user_id: str = UserId,
                          idempotency_key: str | None = Header(None, pattern=IDEMPOTENCY_KEY_PATTERN)):
        """Append watch events; committed to the database before this answers."""
        async with app.state.slot.use() as deployment:
            items = ranking.resolve(deployment.catalog, [e.item if e.item is not None else e.title
                                                         for e in body.events],
                                    lambda i, field: ["body", "events", i, field])
            now = time.time()
            stamps = [now if e.timestamp is None else _epoch(e.timestamp) for e in body.events]
            try:
                result = await run_in_threadpool(app.state.store.append, user_id, items.tolist(), stamps,
                                                 idempotency_key, request_hash(body.model_dump(mode="json")))
            except IdempotencyConflict as exc:
                raise HTTPException(409, str(exc)) from None
            if result.replayed:
                response.status_code = 200
            else:
                app.state.metrics.events.inc(amount=result.response["stored"])
            events = [ranking.event_view(deployment, e["item"], e["timestamp"]) for e in result.response["events"]]
            return {**result.response, "events": events, "replayed": result.replayed}

    @app.get("/users/{user_id}/events", response_model=HistoryOut, dependencies=[require("events:read")])
    async def get_events(user_id: str = UserId, limit: int = Query(limits.max_history, ge=1, le=limits.max_history)):
        """The user's stored history, oldest first (the newest ``limit`` events): what recommendations use."""
        items, stamps = await run_in_threadpool(app.state.store.history, user_id, limit)
        async with app.state.slot.use() as deployment:
            return {"user": user_id, "events": [ranking.event_view(deployment, i, t) for i, t in zip(items, stamps)]}


def add_recommendation_routes(app: FastAPI, schemas: RequestSchemas) -> None:
    HistoryIn, ModelName = schemas.history_in, schemas.model_name  # noqa: N806 - types
    settings = app.state.settings

    @app.get("/users/{user_id}/recommendations", response_model=RecommendationsOut,
             dependencies=[require("recommend")], responses={404: {"description": "No stored events for this user"}})
    async def user_recommendations(user_id: str = UserId, k: int = Query(10, ge=1, le=settings.limits.max_k),
                                   model: ModelName = Query("lstm", description=schemas.model_doc)):
        """Recommendations from the user's stored history (the newest ``max_history`` events)."""
        items, _ = await run_in_threadpool(app.state.store.history, user_id, settings.limits.max_history)
        if not items:
            raise HTTPException(404, f"no stored events for user {user_id!r}; POST /users/{user_id}/events first "
                                     "(or POST /recommendations with a history)")
        async with app.state.slot.use() as deployment:
            history, ignored = ranking.known_history(deployment, items)
            answer = await ranking.rank(deployment, history, k, model, settings.llm_budget_s)
        return {**answer, "user": user_id, "ignored_items": ignored}

    @app.post("/recommendations", response_model=RecommendationsOut, dependencies=[require("recommend")],
              responses=BAD_BODY)
    async def adhoc_recommendations(body: HistoryIn):
        """Recommendations for a history given in the request (ids or titles), nothing stored."""
        async with app.state.slot.use() as deployment:
            history = ranking.resolve(deployment.catalog, body.history, lambda i, _: ["body", "history", i])
            return await ranking.rank(deployment, history, body.k, body.model, settings.llm_budget_s)

    @app.get("/items", dependencies=[require("recommend")])
    async def search_items(q: Utf8Text = Query("", max_length=200), limit: int = Query(20, ge=1, le=200)):
        """Catalog items whose title contains ``q`` (case-insensitive), for pickers."""
        async with app.state.slot.use() as deployment:
            catalog = deployment.catalog
            titles = catalog.items["title"]
            hits = catalog.items.index[titles.str.contains(q, case=False, regex=False)] if q else catalog.items.index
            return {"items": [deployment.item_info(int(catalog.ids[r])) for r in hits[:limit]],
                    "total": int(len(hits))}


def add_admin_routes(app: FastAPI) -> None:
    @app.post("/admin/reload", response_model=ReloadOut, dependencies=[require("admin")],
              responses={422: {"description": "The run folder cannot be served (missing, damaged, failed canary); "
                                              "the old models keep answering"}})
    async def reload(body: ReloadIn | None = None):
        """Load run folders (the body's, else those the server started with), run their canary, then swap them in
        at once; requests in flight are answered by the old models."""
        body = body or ReloadIn()
        slot = app.state.slot
        try:
            new = await run_in_threadpool(build_deployment, app.state.settings, app.state.metrics, None,
                                          {"lstm": body.model, "dualrec": body.dualrec})
        except ModelLoadError as exc:
            raise HTTPException(422, str(exc)) from None
        if set(new.recommenders) != set(slot.current.recommenders):
            await new.close()
            raise HTTPException(422, f"the reload would serve {sorted(new.recommenders)} instead of "
                                     f"{sorted(slot.current.recommenders)}; the models of a running server are fixed")
        await slot.swap(new)
        return {"models": {n: type(m).__name__ for n, m in new.recommenders.items()},
                "catalog_items": len(new.catalog), "canary": new.verdict}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[require("admin")])
    def prometheus_metrics():
        return PlainTextResponse(app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def add_page_routes(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz():
        """200 when the database answers and a canary recommendation through the ranker's batcher is sound."""
        db_ok = await _database_answers(app.state.store)
        async with app.state.slot.use() as deployment:
            try:
                canary = await deployment.canary()
            except Exception as exc:  # a damaged model, a stuck call: not ready, and say why
                canary = f"failed: {exc or type(exc).__name__}"
            body = {"status": "ok" if db_ok and canary.startswith("ok") else "not ready",
                    "database": "ok" if db_ok else "unreachable", "canary": canary,
                    "models": {name: type(m).__name__ for name, m in deployment.recommenders.items()},
                    "catalog_items": len(deployment.catalog), "pid": os.getpid()}
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


async def _database_answers(store: EventStore) -> bool:
    try:
        return await run_in_threadpool(store.ping)
    except Exception:
        log.exception("health check: database unreachable")
        return False


def _epoch(value) -> float:
    """Epoch seconds; an ISO time without an offset is UTC (never the server's local zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)
