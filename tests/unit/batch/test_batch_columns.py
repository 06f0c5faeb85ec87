"""The batch reader's columns hold exactly what ``decode_event`` accepts, with the same field values."""

from __future__ import annotations

import json
import uuid
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from batch.consume import Columns, uuid_words
from streamrec.events import MAX_TS_MS, MIN_TS_MS, Event, EventType, InvalidEvent, decode_event

NOW = 1_800_000_000_000
SKEW = 300_000


def reference(values: list[bytes | None]) -> tuple[list[tuple[int, str, str, int, int]], Counter[str]]:
    """What decoding every message with the contract's one-event decoder gives."""
    ok, bad = [], Counter[str]()
    for raw in values:
        try:
            ev = decode_event(raw, now=NOW, max_future_ms=SKEW)
        except InvalidEvent as exc:
            bad[exc.reason] += 1
            continue
        ok.append((ev.event_id.int, ev.user_id, ev.item_id, ev.ts, ev.type.code))
    return ok, bad


def check(values: list[bytes | None]) -> None:
    got = Columns()
    got.add(values, NOW, SKEW)
    ids = [int(hi) << 64 | int(lo) for chunk in got.event_id for hi, lo in chunk.tolist()]  # the UUIDs' 128 bits
    ts = [t for chunk in got.ts for t in chunk.tolist()]
    codes = [c for chunk in got.type_code for c in chunk.tolist()]
    rows = list(zip(ids, got.users, got.items, ts, codes, strict=True))
    assert (rows, got.invalid) == reference(values)  # same events, same order, same reasons


ids = st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=130),
                st.text(min_size=0, max_size=5))
ts = st.one_of(st.integers(MIN_TS_MS - 10, MIN_TS_MS + 10), st.integers(NOW - 10**9, NOW + 2 * SKEW),
               st.integers(MAX_TS_MS - 5, MAX_TS_MS + 5), st.integers(10**11, 10**13))


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, object]:
    p: dict[str, object] = {"event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
                            "user_id": draw(ids), "item_id": draw(ids),
                            "type": draw(st.sampled_from(["click", "purchase", "view", "add_to_cart", "like"])),
                            "ts": draw(ts)}
    if draw(st.booleans()):
        p["session_id"] = draw(ids)
    if draw(st.booleans()):
        p["quantity"] = draw(st.sampled_from([1, 10_000, 10_001, 0, 99_999]))
    if draw(st.booleans()):
        p["price"] = draw(st.sampled_from([0, 19.9, 1e9, 1000000001, 0.5, 123456789.123]))
    if draw(st.booleans()):
        values = st.one_of(ids, st.integers(-(10**17), 10**17), st.floats(allow_nan=False, allow_infinity=False),
                           st.booleans(), st.none(), st.text(max_size=300))
        p["context"] = draw(st.dictionaries(st.text(max_size=70), values, max_size=34))
    form = draw(st.sampled_from(["plain", "upper", "hex", "braces"]))  # braces are refused (not msgspec's UUID)
    u = uuid.UUID(str(p["event_id"]))
    p["event_id"] = {"plain": str(u), "upper": str(u).upper(), "hex": u.hex, "braces": "{" + str(u) + "}"}[form]
    return p


def encode(p: dict[str, object], how: int) -> bytes:
    if how == 0:
        return json.dumps(p, separators=(",", ":")).encode()  # canonical order when keys are in model order
    if how == 1:
        return json.dumps(p).encode()  # spaces: not canonical
    if how == 2:
        return json.dumps(dict(reversed(list(p.items()))), separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(p, separators=(",", ":")).encode() + b"\n"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(payloads(), st.integers(0, 3)), max_size=12))
def test_columns_equal_decode_event(batch: list[tuple[dict[str, object], int]]) -> None:
    check([encode(p, how) for p, how in batch])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.none()), max_size=6), st.lists(payloads(), max_size=6))
def test_garbage_mixed_with_events(garbage: list[bytes | None], events: list[dict[str, object]]) -> None:
    check([*garbage, *(encode(p, 0) for p in events)])


def canonical(**fields: object) -> bytes:
    base = {"event_id": uuid.uuid4(), "user_id": "u1", "item_id": "i1", "type": EventType.CLICK, "ts": NOW}
    return Event(**{**base, **fields}).to_json_bytes()  # type: ignore[arg-type]


def raw(**fields: object) -> bytes:
    """Canonical-looking JSON that need not be valid (fields after the base ones, in the given order)."""
    base = {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "click", "ts": NOW}
    return json.dumps({**base, **fields}, separators=(",", ":")).encode()


def test_tricky_messages() -> None:
    good = canonical()
    # Two events in one message, or one split over two, must not pass as two (or one): framing is per message.
    two_in_one = good + b"\n" + canonical(user_id="u2")
    first_half, second_half = good[: len(good) // 2], good[len(good) // 2 :]
    escaped = good.replace(b'"u1"', b'"\\u0075\\"1"')
    cases: list[bytes | None] = [
        good, canonical(type=EventType.PURCHASE, quantity=2, price=19.9), two_in_one, first_half, second_half,
        escaped, b"", None, good.replace(b'"u1"', b'"u\\n1"'), good.replace(b"}", b',"context":{"page":"home"}}'),
        good.replace(b'"click"', b'"click","quantity":2'), canonical(ts=NOW + SKEW), canonical(ts=NOW + SKEW + 1),
        good.replace(b'"u1"', b'"' + b"u" * 129 + b'"'), good.replace(b'"u1"', '"üser"'.encode()),
        good.replace(b'"u1"', b'"u\x7f"'), good[:-1] + b" }", good + good,
        canonical(context={f"k{n}": n for n in range(32)}), raw(context={f"k{n}": n for n in range(33)}),
        canonical(context={"a": "x" * 256, "b": None, "c": True, "d": -1.5}), raw(context={"a": "x" * 257}),
        raw(context={"k" * 65: 1}), good.replace(b"}", b',"context":{"a":1,"a":2}}'),
        raw(context={"category": "\ud83d"}), raw(ts="2027-01-15T08:00:00Z"), json.dumps({"x": float("nan")}).encode(),
    ]
    check(cases)
    check([good] * 5)  # the all-valid bulk path
    check([good] * 4_500 + [b"{"] + [good] * 10)  # one bad value: its chunk one by one, the others in bulk


def test_uuid_words_are_the_uuid_bytes() -> None:
    ids = [uuid.uuid4() for _ in range(70_000)]  # msgpack's array header grows at 16 and 65,536 elements
    for n in (1, 300, 70_000):
        assert [(int(hi) << 64) | int(lo) for hi, lo in uuid_words(ids[:n]).tolist()] == [u.int for u in ids[:n]]
    words = uuid_words(ids)
    assert words.shape == (70_000, 2) and words.dtype.name == "uint64"
    assert [(int(hi) << 64) | int(lo) for hi, lo in words.tolist()] == [u.int for u in ids]
    assert uuid_words([]).shape == (0, 2)
