"""The outermost ASGI layer: timing and metrics, the request body limit, and the last line of defence.

One plain ASGI middleware (no ``BaseHTTPMiddleware``: it costs a task per request) that

* observes ``streamrec_api_request_duration_seconds{method, route, status}`` and adds a
  ``Server-Timing: app;dur=<ms>`` header, so load generators can read the server-side time;
* answers 413 when a body is larger than ``settings.max_body_bytes`` (by ``Content-Length`` before
  anything runs, or while a chunked body streams in);
* turns any exception that escaped the typed handlers into a logged 503 "temporarily unavailable":
  a client never sees a 500 or a stack trace.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from online_api.errors import RETRY_AFTER_S, error_body
from online_api.metrics import ApiMetrics

log = logging.getLogger("streamrec.api")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _TooLarge(Exception):
    """Raised into the app when a streamed body passes the limit (the 413 is already sent)."""


def _json_messages(status: int, body: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()) -> list[Message]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra]
    return [{"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": payload}]


class Guard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self._children: dict[tuple[str, str, int], Any] = {}

    def _too_large(self) -> list[Message]:
        return _json_messages(413, error_body("body_too_large", f"request body larger than {self.max_body} bytes"))

    @staticmethod
    def _unavailable() -> list[Message]:
        return _json_messages(503, error_body("unavailable", "temporarily unavailable; retry"),
                              [(b"retry-after", str(RETRY_AFTER_S).encode())])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 503
        started = False  # a response has begun (ours or the app's)
        hijacked = False  # we answered ourselves: whatever the app still sends is dropped

        async def answer(code: int, messages: list[Message]) -> None:
            nonlocal status, started, hijacked
            status, started, hijacked = code, True, True
            for message in messages:
                await send(message)

        async def timed_send(message: Message) -> None:
            nonlocal status, started
            if hijacked:
                return
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                dur = (time.perf_counter() - start) * 1000
                message["headers"] = [*message.get("headers", ()), (b"server-timing", b"app;dur=%.3f" % dur)]
            await send(message)

        if not _utf8_url(scope):
            # Starlette decodes percent-escapes leniently (invalid UTF-8 becomes U+FFFD), so different raw
            # ids would silently map to one id -- and a PUT would write the catalogue entry of that mangled id.
            await answer(400, _json_messages(400, error_body("bad_request", "the URL is not valid UTF-8 after "
                                                             "percent-decoding")))
            self._observe(scope, start, status)
            return
        inner_receive = receive
        if scope["method"] in _BODY_METHODS:
            length = _content_length(scope)
            if length is not None and length > self.max_body:
                await answer(413, self._too_large())
                self._observe(scope, start, status)
                return
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.max_body and not started:
                        await answer(413, self._too_large())
                        raise _TooLarge
                return message

            inner_receive = limited_receive

        try:
            await self.app(scope, inner_receive, timed_send)
        except Exception as exc:
            if not isinstance(exc, _TooLarge) and not hijacked:
                log.exception("unexpected error on %s %s", scope["method"], scope.get("path"))
                if not started:
                    await answer(503, self._unavailable())
                status = 503
        self._observe(scope, start, status)

    def _observe(self, scope: Scope, start: float, status: int) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        key = (scope["method"], path, status)
        child = self._children.get(key)
        if child is None:  # labels() costs a few µs per call: keep the children (bounded: routes × statuses)
            child = self._children[key] = self.metrics.latency.labels(scope["method"], path, str(status))
        child.observe(time.perf_counter() - start)


def _utf8_url(scope: Scope) -> bool:
    """True when the raw path and query string percent-decode to valid UTF-8."""
    for raw in (scope.get("raw_path") or b"", scope.get("query_string") or b""):
        if b"%" in raw:
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                return False
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class HeadAsGet:
    """``HEAD`` answered as ``GET`` without the body, on every route that answers GET.

    FastAPI's routes accept only the methods they declare, so HEAD would be 405 everywhere. This layer
    hands a HEAD request to the app as a GET (the fast lane and the FastAPI routes alike) and drops the
    body chunks of the answer; the status and headers, ``Content-Length`` included, are the GET's. The
    app gets a copy of the scope: the server's own scope keeps ``HEAD`` (uvicorn writes no body for it,
    and the metrics label the method as sent), and receives the matched route for the metrics label.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headless_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        inner = {**scope, "method": "GET"}
        try:
            await self.app(inner, receive, headless_send)
        finally:
            if "route" in inner:
                scope["route"] = inner["route"]
