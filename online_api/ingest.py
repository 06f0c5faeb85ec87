"""The collector's request bodies, read by the event contract's own decoder (msgspec), not by FastAPI.

``POST /v1/events`` and ``/v1/events:batch`` take the raw body: msgspec decodes and validates it in C
into :class:`~streamrec.events.Event` values, the same Struct the worker and the batch reader decode.
A body it refuses is parsed with ``json.loads`` (as FastAPI would) and judged field by field by
:mod:`streamrec.event_problems`, so the 422 lists every problem, each named ``body.<field>``
(``body.events[3].user_id`` in a batch). The OpenAPI document gets the ``Event`` and ``EventBatch``
schemas from msgspec too (:func:`install_event_schemas`): what it documents is what is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import FastAPI
from msgspec import Meta

from online_api.errors import InvalidInput
from streamrec.event_problems import Problem, judge
from streamrec.event_schema import schema_components
from streamrec.events import MAX_EVENT_BYTES, Event, InvalidEvent, check_not_future, now_ms

MAX_BATCH_EVENTS = 500
COMPONENTS = "#/components/schemas/{name}"


class EventBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 500 events; all are validated before any is produced (one bad event rejects the batch)."""

    events: Annotated[list[Event], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]


_DECODE_ONE = msgspec.json.Decoder(Event).decode
_DECODE_BATCH = msgspec.json.Decoder(EventBatch).decode


def request_body(schema: str) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose JSON body is the component ``schema``."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": COMPONENTS.format(name=schema)}}}}}


def install_event_schemas(app: FastAPI) -> None:
    """Add msgspec's schemas of ``Event``, ``EventType`` and ``EventBatch`` to ``app``'s OpenAPI components."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()  # FastAPI caches it in app.openapi_schema: extended once, served as is
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                schema_components([EventBatch], COMPONENTS))
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read a body of this type as JSON (none, ``application/json``, ``*/*+json``)."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def read_events(body: bytes, content_type: str | None, *, batch: bool, max_future_ms: int) -> list[Event]:
    """The events of a collector request body, or :class:`InvalidInput` listing every problem."""
    if not is_json(content_type):
        raise _invalid([("body", "expected a JSON body (Content-Type: application/json)")])
    try:
        events = _DECODE_BATCH(body).events if batch else [_DECODE_ONE(body)]
    except (msgspec.DecodeError, RecursionError):
        events = _judged(body, batch)
    prefix = "body.events[{}]" if batch else "body"
    problems: list[Problem] = []
    now = now_ms()
    for i, event in enumerate(events):
        try:
            check_not_future(event, now, max_future_ms)
        except InvalidEvent as exc:
            problems.append((f"{prefix.format(i)}.ts", exc.detail.removeprefix("ts: ")))
            continue
        size = len(event.to_json_bytes())
        if size > MAX_EVENT_BYTES:  # the worker would dead-letter it: refuse it here instead
            problems.append((prefix.format(i), f"encoded event is {size} bytes, more than {MAX_EVENT_BYTES}"))
    if problems:
        raise _invalid(problems)
    return events


def _judged(body: bytes, batch: bool) -> list[Event]:
    """Events of a body msgspec refused, read as FastAPI would (``json.loads``); every problem if invalid."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _invalid([("body", "invalid JSON: nested too deeply")]) from None
    except UnicodeDecodeError:
        raise _invalid([("body", "invalid JSON: not valid UTF-8")]) from None
    except json.JSONDecodeError as exc:
        raise _invalid([("body", f"invalid JSON: {exc.msg}")]) from None
    except ValueError:  # e.g. an integer longer than Python converts
        raise _invalid([("body", "invalid JSON: not parsable")]) from None
    if not batch:
        return _events([payload], ["body"])
    if not isinstance(payload, dict):
        raise _invalid([("body", "expected a JSON object with an events array")])
    problems = [(f"body.{k}" if k.isprintable() else "body", "not a field (unknown fields are refused)")
                for k in payload if k != "events"]
    items = payload.get("events")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_EVENTS:
        raise _invalid([*problems, ("body.events", f"must be an array of 1 to {MAX_BATCH_EVENTS} events")])
    if problems:
        raise _invalid(problems)
    return _events(items, [f"body.events[{i}]" for i in range(len(items))])


def _events(payloads: list[Any], paths: list[str]) -> list[Event]:
    events: list[Event] = []
    problems: list[Problem] = []
    for payload, path in zip(payloads, paths, strict=True):
        verdict = judge(payload) if isinstance(payload, dict) else [("", "expected a JSON object")]
        if isinstance(verdict, Event):
            events.append(verdict)
        else:
            problems += [(f"{path}.{field}" if field else path, message) for field, message in verdict]
    if problems:
        raise _invalid(problems)
    return events


def _invalid(problems: list[Problem]) -> InvalidInput:
    fields = [{"field": field, "message": message} for field, message in problems]
    return InvalidInput(f"{fields[0]['field']}: {fields[0]['message']}", fields=fields)
