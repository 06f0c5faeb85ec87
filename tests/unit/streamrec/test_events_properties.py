"""Property-based tests of the event decoder: hostile bytes and JSON never raise anything but InvalidEvent,
and every valid event survives the wire (encode -> decode) unchanged.

``decode_event`` is what the worker runs on every Kafka record and what the collector's checks share, so
an exception other than :class:`InvalidEvent` there is a crash (API) or a poison record (worker).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from streamrec.events import (
    MAX_EVENT_BYTES,
    MAX_ID_LEN,
    MAX_TS_MS,
    MIN_TS_MS,
    Event,
    InvalidEvent,
    decode_event,
)

NOW = 1_800_000_000_000  # a fixed "now" (2027): results never depend on the wall clock
MAX_FUTURE_MS = 300_000
REASONS = {"empty", "oversized", "bad_json", "not_object", "invalid_field", "future_timestamp"}
FIELDS = ["event_id", "user_id", "item_id", "type", "ts", "session_id", "quantity", "price", "context"]
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(raw: bytes) -> Event | None:
    """The decoder's answer: an Event, or None for InvalidEvent with a known reason. Anything else fails."""
    try:
        event = decode_event(raw, now=NOW, max_future_ms=MAX_FUTURE_MS)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        assert exc.detail  # a reason without a detail helps nobody reading the dead-letter topic
        return None
    check_invariants(event)
    return event


def check_invariants(event: Event) -> None:
    """What every accepted event guarantees downstream (Redis keys, history encoding, trending)."""
    for value in (event.user_id, event.item_id, event.session_id):
        if value is not None:
            assert 1 <= len(value) <= MAX_ID_LEN
            assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
            value.encode()  # valid UTF-8 (no lone surrogates): usable as a Kafka key and in Redis
    assert MIN_TS_MS <= event.ts <= min(MAX_TS_MS, NOW + MAX_FUTURE_MS)
    if event.type.value == "click":
        assert event.quantity is None and event.price is None
    if event.price is not None:
        assert math.isfinite(event.price)


# ------------------------------------------------------------------------------------------- strategies
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=20)
ids = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters=[chr(c) for c in
                                                                                 [*range(0x20), 0x7F]]),
              min_size=1, max_size=MAX_ID_LEN)
hostile_ids = st.text(min_size=0, max_size=MAX_ID_LEN + 5) | st.sampled_from(
    ["", "a\x00b", "line\nbreak", "tab\tid", "del\x7f", "x" * (MAX_ID_LEN + 1), "\x1f", "\x1e", "ok"])
timestamps = st.integers(MIN_TS_MS, NOW + MAX_FUTURE_MS)
context_values = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=256)


@st.composite
def valid_events(draw: st.DrawFn) -> Event:
    etype = draw(st.sampled_from(["click", "purchase"]))
    fields: dict[str, Any] = {
        "event_id": uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        "user_id": draw(ids), "item_id": draw(ids), "type": etype, "ts": draw(timestamps),
        "session_id": draw(st.none() | ids),
        "context": draw(st.none() | st.dictionaries(st.text(max_size=64), context_values, max_size=8)),
    }
    if etype == "purchase":
        fields["quantity"] = draw(st.none() | st.integers(1, 10_000))
        fields["price"] = draw(st.none() | st.floats(0, 1e9, allow_nan=False))
    return Event(**fields)


def good_payload(event_id: str = "0b7e4f0c-3c57-4c43-9d0e-2f1f5a2b9c11") -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u-1", "item_id": "sku-1", "type": "click", "ts": NOW - 1_000}


# ------------------------------------------------------------------------------------------- properties
@PROPS
@given(st.binary(max_size=2 * MAX_EVENT_BYTES))
@example(b"\xff\xfe\xfd")  # invalid UTF-8
@example(b"[" * 5_000)  # deeply nested JSON within the size limit
@example(b'{"a":' * 2_000 + b"1" + b"}" * 2_000)
@example(b"1" * 5_000)  # an integer over Python's digit limit
@example(b"\x00" * 10)
def test_arbitrary_bytes_only_ever_raise_invalid_event(raw: bytes) -> None:
    decode(raw)


@PROPS
@given(json_values)
def test_arbitrary_json_only_ever_raises_invalid_event(value: Any) -> None:
    decode(json.dumps(value).encode())


@PROPS
@given(st.sampled_from(FIELDS), json_values)
@example("ts", float("inf"))
@example("ts", float("nan"))
@example("ts", 10**30)
@example("price", float("inf"))
@example("quantity", 1e400)
@example("context", {"k" * 65: 1})
def test_any_value_in_any_field_is_accepted_or_invalid_event(name: str, value: Any) -> None:
    """A well-formed event with one field replaced by arbitrary JSON (Infinity and NaN included)."""
    payload = {**good_payload(), name: value}
    text = json.dumps(payload)  # json.dumps writes inf/nan as Infinity/NaN, which json.loads accepts
    decode(text.encode())


@PROPS
@given(st.sampled_from(["user_id", "item_id", "session_id"]), hostile_ids)
def test_ids_with_control_characters_or_bad_lengths_are_rejected(name: str, value: str) -> None:
    bad = not value or len(value) > MAX_ID_LEN or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    try:
        raw = json.dumps({**good_payload(), name: value}).encode()
    except UnicodeEncodeError:  # pragma: no cover - json.dumps escapes everything to ASCII
        return
    assume(len(raw) <= MAX_EVENT_BYTES)
    event = decode(raw)
    assert (event is None) == bad, (name, value)


@PROPS
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=12))
def test_random_objects_with_event_like_keys(extra: dict[str, Any]) -> None:
    decode(json.dumps({**good_payload(), **extra}).encode())


# Text with a lone UTF-16 surrogate, which json.dumps writes as a \udXXX escape (a client can send them). One
# surrogate between text that holds none: two in a row can be a valid pair ("\ud800\udc00" is U+10000).
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
unwritable = st.builds(lambda a, b, c: a + b + c, st.text(max_size=5), surrogates, st.text(max_size=5))


@PROPS
@given(st.sampled_from([*FIELDS, "unknown"]), unwritable, st.booleans())
def test_a_lone_surrogate_anywhere_is_invalid_event(name: str, text: str, as_key: bool) -> None:
    """No UTF-8 store can hold such a string: wherever it is (a value, a field name, a context key or
    value), the event is refused with InvalidEvent, never accepted and never a crash."""
    payload: dict[str, Any] = good_payload()
    if name == "context":
        payload["context"] = {text: 1} if as_key else {"k": text}
    elif as_key:
        payload[text] = 1
    else:
        payload[name] = text
    assert decode(json.dumps(payload).encode()) is None


@PROPS
@given(valid_events())
def test_valid_events_round_trip_unchanged(event: Event) -> None:
    wire = event.to_json_bytes()
    assume(len(wire) <= MAX_EVENT_BYTES)
    back = decode(wire)
    assert back is not None
    assert back == event
    assert back.to_json_bytes() == wire  # the wire form is canonical: re-encoding changes nothing
    assert back.key == event.user_id.encode()


@PROPS
@given(valid_events(), st.integers(MAX_FUTURE_MS + 1, 10**10))
def test_events_from_the_future_are_rejected_with_their_reason(event: Event, ahead: int) -> None:
    payload = json.loads(event.to_json_bytes())
    payload["ts"] = NOW + ahead
    assume(payload["ts"] <= MAX_TS_MS)
    raw = json.dumps(payload).encode()
    assume(len(raw) <= MAX_EVENT_BYTES)
    try:
        decode_event(raw, now=NOW, max_future_ms=MAX_FUTURE_MS)
    except InvalidEvent as exc:
        assert exc.reason == "future_timestamp"
    else:
        raise AssertionError("a future event was accepted")
