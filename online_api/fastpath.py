"""A fast lane for the hottest request: ``GET /v1/users/{user_id}/recommendations`` with plain parameters.

FastAPI's per-request work for that route (resolving and validating six parameters, then the response
model, plus the routing layers) cost about as much CPU as scoring 50,000 items.
:class:`RecommendationsFastPath` is an ASGI middleware just inside the metrics layer and CORS: it takes a
request only when every parameter is plainly valid (``k`` in canonical digits within ``1..max_k``,
``exclude_seen`` ``true``/``false``/``1``/``0``, ids of 1–128 characters without control characters, at
most 500 ``exclude`` ids, every other parameter given at most once) and answers it with the same service
call and the same JSON bytes as the FastAPI route. Every other request (a value FastAPI would coerce or
reject, a repeated parameter, another method or path) passes through untouched to FastAPI, which
validates it and answers as documented: error answers, coercions and the OpenAPI schema stay FastAPI's.

What the FastAPI route would do around the call is kept: the read-key check when reads need a key, the
application's exception handlers for whatever the call raises (so a Redis outage is the same 503), and
``scope["route"]`` set to the documented route so metrics label both lanes alike.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from online_api.routes import DEFAULT_K, split_exclude
from online_api.schemas import MAX_EXCLUDE
from online_api.service import Recommender
from streamrec.events import MAX_ID_LEN

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # schemas.ID_PATTERN forbids these
_K_RE = re.compile(r"[1-9][0-9]{0,5}")  # canonical ASCII digits only; anything else is FastAPI's to coerce
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_JSON_HEADER = (b"content-type", b"application/json")


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LEN and _CONTROL.search(value) is None


def parse_query(query_string: bytes, max_k: int) -> tuple[int, bool, str | None, list[str]] | None:
    """``(k, exclude_seen, category, exclude)`` when every parameter is plainly valid, else None."""
    k, exclude_seen, category = DEFAULT_K, True, None
    excludes: list[str] = []
    given: set[str] = set()
    if query_string:
        # As Starlette parses it (latin-1, blank values kept), so both lanes see the same parameters.
        for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if key == "exclude":
                excludes.append(value)
                continue
            if key in given:
                return None
            given.add(key)
            if key == "k":
                if not _K_RE.fullmatch(value) or not 1 <= (k := int(value)) <= max_k:
                    return None
            elif key == "exclude_seen":
                flag = _BOOLS.get(value)
                if flag is None:
                    return None
                exclude_seen = flag
            elif key == "category":
                if not _valid_id(value):
                    return None
                category = value
            # any other parameter is ignored, as FastAPI ignores it
    exclude = split_exclude(excludes)
    if len(excludes) > MAX_EXCLUDE or len(exclude) > MAX_EXCLUDE:
        return None
    return k, exclude_seen, category, exclude


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI header names are lower-case; the first one wins, as in Starlette
            return value.decode("latin-1")
    return None


class RecommendationsFastPath:
    """See the module docstring. ``auth`` is the read-key check when reads need a key, else None;
    ``handlers`` the application's exception handlers (``app.exception_handlers``)."""

    def __init__(self, app: ASGIApp, *, svc: Recommender, route: Route, max_k: int,
                 handlers: Mapping[Any, Callable[..., Any]],
                 auth: Callable[[str | None], Awaitable[None]] | None = None) -> None:
        self.app, self.svc, self.route, self.max_k, self.handlers, self.auth = app, svc, route, max_k, handlers, auth
        self.path_regex = route.path_regex  # the documented route's own pattern: same paths, same user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = query = None
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            m = self.path_regex.match(scope["path"])
            if m is not None and _valid_id(user_id := m.group("user_id")):
                query = parse_query(scope["query_string"], self.max_k)
        if query is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"user_id": user_id}
        try:
            body = await self._answer(scope, user_id, *query)
        except Exception as exc:  # translated exactly as Starlette's ExceptionMiddleware would
            handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if handler is None:
                raise  # the metrics layer logs it and answers 503
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADER]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, user_id: str, k: int, exclude_seen: bool, category: str | None,
                      exclude: list[str]) -> bytes:
        if self.auth is not None:
            await self.auth(_header(scope, b"x-api-key"))
        answer = await self.svc.recommend(user_id, k, exclude_seen=exclude_seen, category=category, exclude=exclude)
        return answer.to_json()
