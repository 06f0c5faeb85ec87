"""Every way a record can be wrong becomes a dead letter with a reason; nothing raises."""

from __future__ import annotations

import json
import uuid

import pytest

from stream_processors.dead_letters import DETAIL, REASON, REJECTED_AT, SOURCE, SOURCE_TS, headers_of
from stream_processors.decode import MAX_DETAIL, decode_records
from streamrec.events import MAX_EVENT_BYTES, now_ms
from streamrec.kafka_io import Record

NOW = now_ms()


def good(**changes: object) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "click", "ts": NOW, **changes}


def rec(value: bytes | None, offset: int = 0) -> Record:
    return Record("clicks", 3, offset, b"u1", value, NOW)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "bad_json"),
    (b'{"user_id": "\xff\xfe"}', "bad_json"),  # invalid UTF-8
    (b"[1, 2]", "not_object"),
    (b"", "empty"),
    (None, "empty"),
    (json.dumps({k: v for k, v in good().items() if k != "item_id"}).encode(), "invalid_field"),
    (json.dumps(good(type="like")).encode(), "invalid_field"),
    (json.dumps(good(ts=NOW + 86_400_000)).encode(), "future_timestamp"),
    (json.dumps(good(context={"x": "y" * MAX_EVENT_BYTES})).encode(), "oversized"),
    (b"[" * 100_000 + b"]" * 100_000, "oversized"),
])
def test_invalid_records_become_dead_letters(raw: bytes | None, reason: str) -> None:
    valid, dead = decode_records([rec(raw)], NOW, 300_000)
    assert valid == []
    assert [d.reason for d in dead] == [reason]
    assert dead[0].record.value == raw and len(dead[0].detail) <= MAX_DETAIL


def test_order_is_kept_and_valid_events_pass() -> None:
    records = [rec(json.dumps(good(item_id=f"i{n}")).encode(), n) if n % 2 else rec(b"nope", n) for n in range(6)]
    valid, dead = decode_records(records, NOW, 300_000)
    assert [v.event.item_id for v in valid] == ["i1", "i3", "i5"]
    assert [d.record.offset for d in dead] == [0, 2, 4]


def test_dead_letter_headers_name_the_reason_and_source() -> None:
    _, dead = decode_records([rec(b"{", 41)], NOW, 300_000)
    headers = dict(headers_of(dead[0], 123))
    assert headers[REASON] == b"bad_json" and headers[DETAIL]
    assert headers[SOURCE] == b"clicks:3:41"
    assert headers[SOURCE_TS] == str(NOW).encode() and headers[REJECTED_AT] == b"123"
