"""Typed errors of the API and the one place that turns them into HTTP answers.

Handlers and the service layer raise :class:`ApiError` subclasses (or let a Redis/Kafka error escape);
:func:`install_error_handlers` translates them once. Every error answer has the same body::

    {"error": {"code": "invalid_input", "message": "...", "fields": [{"field": "query.k", "message": "..."}]}}

No stack trace and no internal message ever reaches a client: anything unexpected is logged and answered
503 "temporarily unavailable" (by :class:`online_api.middleware.Guard`), never 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamrec.kafka_io import KafkaUnavailable
from streamrec.store import StoreUnavailable

log = logging.getLogger("streamrec.api")

RETRY_AFTER_S = 2


class ApiError(Exception):
    """An error with an HTTP status, a stable machine code and a message safe to show a client."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, fields: Sequence[dict[str, str]] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = list(fields)
        self.headers = headers or {}


class NotFound(ApiError):
    status, code = 404, "not_found"


class InvalidInput(ApiError):
    status, code = 422, "invalid_input"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class BodyTooLarge(ApiError):
    status, code = 413, "body_too_large"


class Unavailable(ApiError):
    """A dependency (Kafka, Redis, the model) cannot serve now; the client should retry."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def error_body(code: str, message: str, fields: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": {"code": code, "message": message, "fields": list(fields)}}


def _field_name(loc: Sequence[Any]) -> str:
    """``("body", "events", 3, "user_id")`` → ``body.events[3].user_id``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request"


def validation_fields(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic/FastAPI error dicts as ``[{"field", "message"}]`` (input values are never echoed)."""
    out = []
    for e in errors:
        if e.get("type") == "json_invalid":  # loc is ("body", <character position>)
            detail = (e.get("ctx") or {}).get("error", "")
            out.append({"field": "body", "message": f"invalid JSON: {detail}".rstrip(": ")})
        else:
            out.append({"field": _field_name(e.get("loc", ())), "message": str(e.get("msg", "invalid"))})
    return out


def body_parse_problem(exc: StarletteHTTPException) -> str | None:
    """Why the request body could not be parsed as JSON, when ``exc`` is FastAPI's 400 for that, else None.

    FastAPI answers a body that ``json.loads`` rejects with anything but ``JSONDecodeError`` (nesting
    deeper than the interpreter's recursion limit, bytes that are not UTF-8) with a bare 400, raised from
    the parser's exception.
    """
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, UnicodeError):
        return "not valid UTF-8"
    if isinstance(cause, ValueError):
        return "not parsable"
    return None


def _answer(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.fields), status_code=exc.status,
                        headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the translation of every typed error (and of Redis/Kafka failures) on ``app``."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _answer(exc)

    def invalid(request: Request, fields: list[dict[str, str]]) -> JSONResponse:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None and request.url.path.startswith("/v1/events"):
            metrics.events.labels("invalid").inc()
        first = fields[0] if fields else {"field": "request", "message": "invalid"}
        return _answer(InvalidInput(f"{first['field']}: {first['message']}", fields=fields))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return invalid(request, validation_fields(exc.errors()))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own errors: unknown route (404), wrong method (405), and FastAPI's 400 for a body
        # its JSON parser gave up on, which is invalid JSON like any other (422, as a truncated body).
        assert isinstance(exc, StarletteHTTPException)
        unparsable = body_parse_problem(exc)
        if unparsable is not None:
            return invalid(request, [{"field": "body", "message": f"invalid JSON: {unparsable}"}])
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        status = exc.status_code if 400 <= exc.status_code < 500 else 503
        message = str(exc.detail) if status < 500 else "temporarily unavailable"
        return JSONResponse(error_body(codes.get(status, "bad_request"), message), status_code=status,
                            headers=getattr(exc, "headers", None))

    async def on_redis(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable on %s: %s", request.url.path, exc)
        return _answer(Unavailable("the store is unavailable; retry shortly"))

    async def on_kafka(request: Request, exc: Exception) -> JSONResponse:
        log.warning("kafka unavailable on %s: %s", request.url.path, exc)
        return _answer(Unavailable("the event log is unavailable; retry shortly"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(redis.RedisError, on_redis)
    app.add_exception_handler(StoreUnavailable, on_redis)
    app.add_exception_handler(KafkaUnavailable, on_kafka)
