"""A fast lane for the hottest request: ``GET /v1/users/{user_id}/recommendations`` with plain parameters.

FastAPI's per-request work for that route (resolving and validating six parameters, then the response
model, plus the routing layers) cost about as much CPU as scoring 50,000 items.
:class:`RecommendationsFastPath` is an ASGI middleware just inside the metrics layer and CORS: it takes a
request only when every parameter is plainly valid (``k`` in canonical digits within the route's bounds,
``exclude_seen`` ``true``/``false``/``1``/``0``, ids of 1–128 characters without control characters, at
most 500 ``exclude`` ids, every other parameter given at most once) and answers it with the same service
call and the same JSON bytes as the FastAPI route. Every other request (a value FastAPI would coerce or
reject, a repeated parameter, a parameter the route does not declare, another method or path) passes
through untouched to FastAPI, which validates it and answers as documented: error answers, coercions and
the OpenAPI schema stay FastAPI's.

The lane cannot drift from the route: :func:`plan_for` reads the route's declared parameters (its FastAPI
dependant) and builds the lane's parser of each from the declaration (bounds, defaults). A parameter
the lane has no parser for, or declared differently from what its parser was written for, is listed in
:attr:`LanePlan.unhandled` and switches the lane off (every request goes to the route) with a warning,
so a parameter added to the route is never silently ignored; tests/unit/online_api/test_api_fastpath.py
fails on it.

What the FastAPI route would do around the call is kept: the read-key check when reads need a key, the
application's exception handlers for whatever the call raises (so a Redis outage is the same 503), and
``scope["route"]`` set to the documented route so metrics label both lanes alike.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from online_api.routes import split_exclude
from online_api.schemas import ID_PATTERN, MAX_EXCLUDE
from online_api.service import Recommender
from streamrec.events import MAX_ID_LEN

log = logging.getLogger("streamrec.api")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # schemas.ID_PATTERN forbids these
_K_RE = re.compile(r"[1-9][0-9]{0,5}")  # canonical ASCII digits only; anything else is FastAPI's to coerce
_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_ID_RULES = {"min_length": 1, "max_length": MAX_ID_LEN, "pattern": ID_PATTERN}  # what _valid_id checks
_JSON_HEADER = (b"content-type", b"application/json")
PASS: Any = object()  # a parser's answer for a value that is not plainly valid: the route decides

Parser = Callable[[list[str]], Any]  # the values given for one parameter ([] when absent) → value or PASS


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LEN and _CONTROL.search(value) is None


def _rules(field: Any) -> dict[str, Any]:
    """A declared parameter's constraints (``ge``, ``max_length``, ``pattern``, ...) as one dict."""
    out: dict[str, Any] = {}
    for meta in field.field_info.metadata:  # annotated_types objects and pydantic's general metadata
        is_data = dataclasses.is_dataclass(meta) and not isinstance(meta, type)
        out.update(dataclasses.asdict(meta) if is_data else vars(meta))
    return {k: v for k, v in out.items() if v is not None}


def _k(field: Any) -> Parser | None:
    rules, default = _rules(field), field.field_info.default
    if field.field_info.annotation is not int or rules.keys() != {"ge", "le"} or type(default) is not int:
        return None
    lo, hi = rules["ge"], rules["le"]

    def parse(values: list[str]) -> Any:
        if not values:
            return default
        if len(values) > 1 or not _K_RE.fullmatch(values[0]) or not lo <= (k := int(values[0])) <= hi:
            return PASS
        return k

    return parse


def _flag(field: Any) -> Parser | None:
    default = field.field_info.default
    if field.field_info.annotation is not bool or _rules(field) or type(default) is not bool:
        return None

    def parse(values: list[str]) -> Any:
        if not values:
            return default
        return _BOOLS.get(values[0], PASS) if len(values) == 1 else PASS

    return parse


def _optional_id(field: Any) -> Parser | None:
    info = field.field_info
    if info.annotation != (str | None) or info.default is not None or _rules(field) != _ID_RULES:
        return None

    def parse(values: list[str]) -> Any:
        if not values:
            return None
        return values[0] if len(values) == 1 and _valid_id(values[0]) else PASS

    return parse


def _id_list(field: Any) -> Parser | None:
    info, rules = field.field_info, _rules(field)
    if info.annotation != (list[str] | None) or info.default is not None or rules.keys() != {"max_length"}:
        return None
    most = rules["max_length"]

    def parse(values: list[str]) -> Any:
        ids = split_exclude(values)  # as the route does; it refuses more than MAX_EXCLUDE ids
        return PASS if len(values) > most or len(ids) > MAX_EXCLUDE else ids

    return parse


# The lane's parser of each query parameter, by name; the name is also the service call's keyword.
BUILDERS: dict[str, Callable[[Any], Parser | None]] = {
    "k": _k, "exclude_seen": _flag, "category": _optional_id, "exclude": _id_list}


@dataclasses.dataclass(frozen=True)
class LanePlan:
    """The lane's parsers for the route's query parameters, and what it cannot handle (then it is off)."""

    parsers: dict[str, Parser]
    unhandled: tuple[str, ...] = ()

    def parse(self, query_string: bytes) -> dict[str, Any] | None:
        """The service call's keywords when every parameter is plainly valid, else None (the route's)."""
        if self.unhandled:
            return None
        given: dict[str, list[str]] = {}
        if query_string:
            # As Starlette parses it (latin-1, blank values kept), so both lanes see the same parameters.
            for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
                if key not in self.parsers:  # not the route's (or not ours): the route decides what it means
                    return None
                given.setdefault(key, []).append(value)
        out = {}
        for name, parse in self.parsers.items():
            if (value := parse(given.get(name, []))) is PASS:
                return None
            out[name] = value
        return out


def _dependants(dependant: Any) -> Iterator[Any]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def plan_for(route: APIRoute, auth: Callable[..., Any] | None = None) -> LanePlan:
    """Read ``route``'s declared parameters and dependencies; see the module docstring.

    Besides its query parameters, the route may declare only the ``user_id`` path parameter (an id) and,
    as its one dependency, ``auth`` (the read-key check the lane runs itself).
    """
    parsers: dict[str, Parser] = {}
    unhandled: list[str] = []
    top = route.dependant
    if [d.call for d in top.dependencies] != ([auth] if auth is not None else []):
        unhandled.append("dependencies " + ", ".join(getattr(d.call, "__qualname__", repr(d.call))
                                                     for d in top.dependencies))
    for dep in _dependants(top):
        for field in dep.query_params:
            build = BUILDERS.get(field.alias)
            parse = build(field) if build is not None and field.alias not in parsers else None
            if parse is None:
                unhandled.append(f"query.{field.alias}")
            else:
                parsers[field.alias] = parse
        others = [*dep.header_params, *dep.cookie_params, *dep.body_params]
        others += [f for f in dep.path_params if f.alias != "user_id" or _rules(f) != _ID_RULES]
        unhandled += [f"parameter {f.alias}" for f in others]
    return LanePlan(parsers, tuple(unhandled))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI header names are lower-case; the first one wins, as in Starlette
            return value.decode("latin-1")
    return None


class RecommendationsFastPath:
    """See the module docstring. ``auth`` is the read-key check when reads need a key, else None;
    ``handlers`` the application's exception handlers (``app.exception_handlers``)."""

    def __init__(self, app: ASGIApp, *, svc: Recommender, route: APIRoute,
                 handlers: Mapping[Any, Callable[..., Any]],
                 auth: Callable[[str | None], Awaitable[None]] | None = None) -> None:
        self.app, self.svc, self.route, self.handlers, self.auth = app, svc, route, handlers, auth
        self.path_regex = route.path_regex  # the documented route's own pattern: same paths, same user_id
        self.plan = plan_for(route, auth)
        if self.plan.unhandled:
            log.warning("recommendations fast lane off: online_api/fastpath.py does not handle %s of the route",
                        ", ".join(self.plan.unhandled))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = query = None
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            m = self.path_regex.match(scope["path"])
            if m is not None and _valid_id(user_id := m.group("user_id")):
                query = self.plan.parse(scope["query_string"])
        if query is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"user_id": user_id}
        try:
            body = await self._answer(scope, user_id, query)
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

    async def _answer(self, scope: Scope, user_id: str, query: dict[str, Any]) -> bytes:
        if self.auth is not None:
            await self.auth(_header(scope, b"x-api-key"))
        answer = await self.svc.recommend(user_id, **query)
        return answer.to_json()
