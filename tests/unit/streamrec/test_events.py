"""The event contract: what is accepted, what is rejected with which reason, and the schema file."""

from __future__ import annotations

import json
import uuid

import pytest

from streamrec.events import MAX_EVENT_BYTES, InvalidEvent, decode_event, schema_text
from streamrec.settings import REPO_ROOT

NOW = 1_795_342_500_000
GOOD = {"event_id": str(uuid.UUID(int=1)), "user_id": "u1", "item_id": "sku-1", "type": "click", "ts": NOW}


def _raw(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_iso_and_epoch_ms_give_the_same_time() -> None:
    a = decode_event(_raw(ts="2026-11-22T10:15:00Z"), now=NOW)
    b = decode_event(_raw(ts=1_795_342_500_000), now=NOW)
    assert a.ts == b.ts == 1_795_342_500_000


def test_wire_form_round_trips() -> None:
    ev = decode_event(_raw(type="purchase", quantity=2, price=9.5, session_id="s", context={"page": "pdp"}), now=NOW)
    assert decode_event(ev.to_json_bytes(), now=NOW) == ev
    assert ev.key == b"u1"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "bad_json"),
        (b"\xff\xfe\x00", "bad_json"),
        (b"[1, 2]", "not_object"),
        (b"x" * (MAX_EVENT_BYTES + 1), "oversized"),
        (_raw(event_id="not-a-uuid"), "invalid_field"),
        (_raw(user_id=...), "invalid_field"),
        (_raw(user_id="u" * 129), "invalid_field"),
        (_raw(item_id=""), "invalid_field"),
        (_raw(item_id="a\nb"), "invalid_field"),
        (_raw(type="like"), "invalid_field"),
        (_raw(ts="yesterday"), "invalid_field"),
        (_raw(ts=1_795_342_500), "invalid_field"),  # seconds, not milliseconds
        (_raw(ts=True), "invalid_field"),
        (_raw(quantity=2), "invalid_field"),  # quantity only on purchases
        (_raw(type="purchase", quantity=0), "invalid_field"),
        (_raw(surprise=1), "invalid_field"),
        (_raw(context={f"k{i}": i for i in range(40)}), "invalid_field"),
        (_raw(ts=NOW + 3_600_000), "future_timestamp"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw, now=NOW)
    assert err.value.reason == reason
    assert err.value.detail


def test_field_errors_name_the_field() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(_raw(user_id="u" * 129), now=NOW)
    assert "user_id" in err.value.detail


def test_schema_file_is_generated_from_the_model() -> None:
    assert (REPO_ROOT / "docs" / "event.schema.json").read_text() == schema_text(), "run: streamrec schema --write"
    schema = json.loads(schema_text())
    assert set(schema["required"]) == {"event_id", "user_id", "item_id", "type", "ts"}
    assert schema["properties"]["user_id"]["maxLength"] == 128


def _escaped(**fields: object) -> bytes:
    r"""An event whose JSON carries ``\ud83d`` escapes literally (``json.dumps`` would write them so too)."""
    return json.dumps({**json.loads(_raw()), **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_escaped(context={"category": "\ud83d"}), "context.category"),  # the record that stalled the worker
        (_escaped(context={"page": "\ud800"}), "context.page"),
        (_escaped(session_id="s\udfff"), "session_id"),
        (_escaped(context={"category": "evil\u0000\u001b[2J"}), "context"),  # it names Redis keys
        (_escaped(context={"category": "c" * 129}), "context"),
        (_escaped(context={"category": 7}), "context"),
        (_escaped(context={"x": [1]}), "context.x"),
        (_escaped(type="purchase", quantity="2"), "quantity"),
        (_escaped(type="purchase", quantity=2.0), "quantity"),
        (_escaped(type="purchase", quantity=True), "quantity"),
        (_escaped(type="purchase", price="9.5"), "price"),
        (_raw(context={"x": float("nan")}), "context.x"),
        (_raw(context={"x": float("inf")}), "context.x"),
        (_escaped(type="\ud800"), "type"),  # msgspec cannot even compare it with an enum value
        (_escaped(event_id="\udfff"), "event_id"),
        (_escaped(ts="2026-11-22T10:15:00\ud800"), "ts"),
        (_escaped(**{"x\ud800": 1}), "x"),  # an unknown field whose name cannot be written
        (_escaped(context={"\ud800": 1}), "context"),
        (_raw(ts=1_795_342_500_000.5), "ts"),  # epoch milliseconds are a JSON integer
        (_raw(event_id="{" + str(uuid.UUID(int=1)) + "}"), "event_id"),  # msgspec's UUID: 32 hex digits
    ],
)
def test_strings_and_types_the_contract_refuses(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw, now=NOW)
    assert err.value.reason == "invalid_field"
    assert err.value.detail.startswith(field), err.value.detail


def test_every_uuid_spelling_msgspec_reads_is_one_canonical_id() -> None:
    u = uuid.UUID(int=1)
    for spelling in (str(u), str(u).upper(), u.hex):
        assert decode_event(_raw(event_id=spelling), now=NOW).event_id == u


def test_details_never_hold_what_a_log_or_header_cannot() -> None:
    for raw in (_escaped(type="x\u001b[2J\ud800"), _escaped(type="v" * 5_000), _escaped(**{"a\u0000b": 1})):
        with pytest.raises(InvalidEvent) as err:
            decode_event(raw, now=NOW)
        assert err.value.detail.isprintable() and len(err.value.detail) < 400, err.value.detail


def test_strict_fields_still_take_what_json_means() -> None:
    e = decode_event(_escaped(type="purchase", quantity=2, price=9, context={
        "category": "shoes", "emoji": "\ud83d\ude00", "n": 1, "f": 1.5, "b": False, "none": None}), now=NOW)
    assert e.quantity == 2 and e.price == 9.0
    assert e.context == {"category": "shoes", "emoji": "😀", "n": 1, "f": 1.5, "b": False, "none": None}
