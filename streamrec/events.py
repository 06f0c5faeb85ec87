"""Decoding the event contract: one decoder for the worker, the batch reader and the collector.

Frontends send click and purchase events to the collector (``POST /v1/events``) or straight to Kafka.
Events live on two topics (clicks, purchases) keyed by ``user_id`` so one user's events stay ordered in
one partition. The contract itself is :class:`~streamrec.event_model.Event` (re-exported here with its
limits); this module turns bytes or parsed JSON into events or :class:`InvalidEvent` with a reason code.

msgspec reads and validates a well-formed event in C. Anything it refuses is judged again from
``json.loads`` output by the same ``Event`` (``msgspec.convert``), which names the reason and the field
(:mod:`streamrec.event_problems`); so ``bad_json`` and ``not_object`` keep meaning what ``json.loads``
says, and NaN, Infinity or lone surrogates, which only ``json.loads`` lets through, are refused by the
contract's own rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec

from streamrec.event_model import ID_PATTERN as ID_PATTERN
from streamrec.event_model import MAX_CONTEXT_KEYS as MAX_CONTEXT_KEYS
from streamrec.event_model import MAX_EVENT_BYTES as MAX_EVENT_BYTES
from streamrec.event_model import MAX_ID_LEN as MAX_ID_LEN
from streamrec.event_model import MAX_TS_MS as MAX_TS_MS
from streamrec.event_model import MIN_TS_MS as MIN_TS_MS
from streamrec.event_model import Event as Event
from streamrec.event_model import EventType as EventType
from streamrec.event_model import InvalidEvent as InvalidEvent
from streamrec.event_problems import first_problem
from streamrec.event_schema import schema_text as schema_text

DEFAULT_MAX_FUTURE_MS = 300_000
DECODE_CHUNK = 2_000  # values per bulk attempt: one bad value costs its chunk the one-by-one path
_DECODE = msgspec.json.Decoder(Event).decode
_TS = attrgetter("ts")


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def decode_event(raw: bytes | None, *, now: int | None = None, max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> Event:
    """Decode and validate one wire event, or raise :class:`InvalidEvent` with a reason code.

    Reason codes: ``empty``, ``oversized``, ``bad_json``, ``not_object``, ``invalid_field``,
    ``future_timestamp``.
    """
    if not raw:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        event = _DECODE(raw)
    except (msgspec.DecodeError, RecursionError):
        return validate_event(parse_object(raw), now=now, max_future_ms=max_future_ms)
    check_not_future(event, now, max_future_ms)
    return event


def parse_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object (``json.loads``), or :class:`InvalidEvent` ``bad_json`` / ``not_object``."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("bad_json", str(exc)[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(payload).__name__}")
    return payload


def validate_event(payload: dict[str, Any], *, now: int | None = None,
                   max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> Event:
    """Validate an already-parsed event object (see :func:`decode_event` for the reason codes)."""
    try:
        event = msgspec.convert(payload, Event)  # strict: no str -> int, no float -> int, no bool -> int
    except (msgspec.ValidationError, UnicodeEncodeError) as exc:  # the latter: a lone surrogate (json.loads)
        raise InvalidEvent("invalid_field", first_problem(payload, exc)) from None
    check_not_future(event, now, max_future_ms)
    return event


def check_not_future(event: Event, now: int | None, max_future_ms: int) -> None:
    """:class:`InvalidEvent` ``future_timestamp`` when ``event.ts`` is beyond the allowed clock skew."""
    current = now_ms() if now is None else now
    if event.ts > current + max_future_ms:
        raise InvalidEvent("future_timestamp", f"ts: {(event.ts - current) / 1000:.0f}s in the future")


def decode_many(values: Sequence[bytes | None], *, now: int, max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
                ) -> tuple[list[Event], list[int] | None, list[tuple[int, InvalidEvent]]]:
    """Decode a batch of wire values exactly as :func:`decode_event` would, one by one.

    Returns the valid events in input order, the input position of each (None when every value was
    valid: then positions are 0..n-1) and the invalid ones as (position, error). A chunk of valid
    events, the usual case, is decoded by one ``map`` over msgspec's decoder: no Python frame per event.
    """
    events: list[Event] = []
    where: list[int] = []
    invalid: list[tuple[int, InvalidEvent]] = []
    limit = now + max_future_ms
    for start in range(0, len(values), DECODE_CHUNK):
        chunk = values[start : start + DECODE_CHUNK]
        try:
            lengths = list(map(len, chunk))  # type: ignore[arg-type]  # a None raises TypeError: one by one
            if min(lengths) == 0 or max(lengths) > MAX_EVENT_BYTES:
                raise ValueError("an empty or oversized value")
            part = list(map(_DECODE, chunk))  # type: ignore[arg-type]
            if max(map(_TS, part)) > limit:
                raise ValueError("an event from the future")
        except (ValueError, TypeError, RecursionError):  # msgspec's DecodeError is a ValueError
            for k, raw in enumerate(chunk, start):
                try:
                    events.append(decode_event(raw, now=now, max_future_ms=max_future_ms))
                    where.append(k)
                except InvalidEvent as exc:
                    invalid.append((k, exc))
            continue
        events.extend(part)
        where.extend(range(start, start + len(part)))
    return events, (where if invalid else None), invalid
