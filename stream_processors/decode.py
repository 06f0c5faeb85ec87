"""Step one of a batch: decode and validate every record; what fails becomes a dead letter.

This is the one place where input is judged, by the contract's own bulk decoder
(:func:`streamrec.events.decode_many`, msgspec in C). Anything a record can make go wrong while it is
decoded is a data error: the record becomes a :class:`DeadLetter` with a reason code (those of
:func:`streamrec.events.decode_event`, plus ``undecodable`` for anything unexpected) and the batch goes
on. Dead letters carry the original key and value bytes unchanged; see :mod:`.dead_letters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from streamrec.events import Event, InvalidEvent, decode_event, decode_many
from streamrec.kafka_io import Record
from streamrec.partitioner import partition_for

MAX_DETAIL = 500


@dataclass(frozen=True)
class DeadLetter:
    """An invalid record and why it was rejected."""

    record: Record
    reason: str
    detail: str
    exception: str | None = None  # the exception's type, for ``apply_failed``


class ValidEvent(NamedTuple):
    """A decoded event and where it came from (a named tuple: one per event, cheap to create)."""

    record: Record
    event: Event


def decode_records(
    records: Sequence[Record], now_ms: int, max_future_ms: int
) -> tuple[list[ValidEvent], list[DeadLetter]]:
    """Split ``records`` into valid events and dead letters, keeping their order."""
    try:
        events, where, invalid = decode_many([rec.value for rec in records], now=now_ms, max_future_ms=max_future_ms)
    except Exception:  # a bug in the bulk path must not stall the batch: judge the records one by one
        return _one_by_one(records, now_ms, max_future_ms)
    positions = range(len(events)) if where is None else where
    valid = [ValidEvent(records[k], event) for k, event in zip(positions, events, strict=True)]
    dead = [DeadLetter(records[k], exc.reason, exc.detail[:MAX_DETAIL]) for k, exc in invalid]
    return valid, dead


def _one_by_one(
    records: Sequence[Record], now_ms: int, max_future_ms: int
) -> tuple[list[ValidEvent], list[DeadLetter]]:
    valid: list[ValidEvent] = []
    dead: list[DeadLetter] = []
    for rec in records:
        try:
            valid.append(ValidEvent(rec, decode_event(rec.value, now=now_ms, max_future_ms=max_future_ms)))
        except InvalidEvent as exc:
            dead.append(DeadLetter(rec, exc.reason, exc.detail[:MAX_DETAIL]))
        except Exception as exc:  # whatever a record makes the decoder raise is still the record's fault
            dead.append(DeadLetter(rec, "undecodable", f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]))
    return valid, dead


def placed(valid: Sequence[ValidEvent], partitions: int,
           cache: dict[str, int]) -> tuple[list[ValidEvent], list[DeadLetter]]:
    """Split off the events not in the partition Kafka's murmur2 partitioner gives their user (of
    ``partitions``): a user's state lives under that partition's keys (:class:`streamrec.store.Keys`), where
    the API looks for it, so such an event (a producer with another partitioner, or a record produced to an
    explicit partition) cannot be applied there and becomes a ``wrong_partition`` dead letter. ``cache``
    keeps the partition of users seen (cleared past a million)."""
    if len(cache) > 1_000_000:
        cache.clear()
    ok: list[ValidEvent] = []
    dead: list[DeadLetter] = []
    for v in valid:
        user = v.event.user_id
        p = cache.get(user)
        if p is None:
            p = cache[user] = partition_for(user, partitions)
        if p == v.record.partition:
            ok.append(v)
        else:
            dead.append(DeadLetter(v.record, "wrong_partition",
                                   f"user {user!r} belongs in partition {p} of {partitions} (murmur2 of the user "
                                   f"id, the Java client's default partitioner), not {v.record.partition}: "
                                   "produce keyed by user_id with the murmur2 partitioner"[:MAX_DETAIL]))
    return ok, dead
