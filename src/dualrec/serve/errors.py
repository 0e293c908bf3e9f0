"""Error answers that always encode and never cost the client its connection.

* Validation errors echo the client's input (FastAPI's ``{"loc", "msg", "type", "input"}``), and that input may be
  a NaN, an infinity or a lone surrogate (``"\\ud800"``), none of which JSON or UTF-8 can carry: :func:`json_safe`
  writes such values as text (``"nan"``, ``"\\\\ud800"``) before the answer is encoded.
* An unexpected exception becomes a 500 naming a log reference, in :class:`InternalErrorMiddleware`, which swallows
  the exception after answering. Starlette's own handler for ``Exception`` answers and then re-raises, and uvicorn
  then closes the connection, so every client with a keep-alive pool paid for a server error with a reset.
"""

from __future__ import annotations

import json
import logging
import math
import uuid

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("dualrec.serve")


def json_safe(value):
    """``value`` with every non-finite float and every string that is not valid UTF-8 written as plain text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def error_response(status: int, detail, headers: dict[str, str] | None = None) -> JSONResponse:
    # twice: the encoder turns objects (an exception in a validation error's ``ctx``) into text, which may echo input
    return JSONResponse({"detail": json_safe(jsonable_encoder(json_safe(detail)))}, status_code=status,
                        headers=headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, exc.errors())


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))


EXCEPTION_HANDLERS = {RequestValidationError: validation_error, StarletteHTTPException: http_error}


async def send_error(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """An error answer straight from ASGI middleware (before FastAPI runs)."""
    body = json.dumps({"detail": json_safe(message)}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class InternalErrorMiddleware:
    """500 ``internal server error (log reference ...)`` for an unexpected exception; the trace goes to the log only,
    and the connection stays open."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracking(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            ref = uuid.uuid4().hex[:12]
            log.error("unhandled error %s on %s %s", ref, scope["method"], scope["path"], exc_info=exc)
            if started:  # half an answer is out: nothing more can be said on this connection
                raise
            await send_error(send, 500, f"internal server error (log reference {ref})")
