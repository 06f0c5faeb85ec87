"""Consume ranges of the event topics with as little per-message Python as possible.

Big ``Consumer.consume`` batches with every partition of a topic assigned (librdkafka fetches them in
parallel), checks per run of one partition instead of per message, validation by the contract's own bulk
decoder (:func:`streamrec.events.decode_many`: msgspec in C), columns taken from the decoded events with
``map`` (no Python frame per event), ids factorised with pandas, and the cyclic garbage collector paused
while millions of small objects exist (it would otherwise rescan them again and again).
"""

from __future__ import annotations

import gc
import itertools
import operator
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pandas as pd
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streamrec.events import decode_many, now_ms
from streamrec.kafka_io import KafkaUnavailable, is_data
from streamrec.settings import Settings

TP = tuple[str, int]
Work = list[tuple[str, int, int, int]]  # (topic, partition, first offset, end offset)
Progress = Callable[[str], None]
CONSUME_BATCH = 50_000


def new_consumer(settings: Settings) -> Consumer:
    """A consumer for assigned-partition reads: never joins the group, never commits."""
    return Consumer({
        "bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.consumer_group}-batch-reader",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0,
        "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
        # prefetch far ahead (the default stops at 100 k queued messages and starves a fast reader)
        "queued.max.messages.kbytes": 512 * 1024, "queued.min.messages": 1_000_000,
    })


def watermarks(settings: Settings, topics: list[str], timeout: float = 10.0) -> dict[TP, tuple[int, int]]:
    """(low, high) offsets of every partition of ``topics`` (missing topics are left out)."""
    consumer = new_consumer(settings)
    try:
        md = consumer.list_topics(timeout=timeout)
        out: dict[TP, tuple[int, int]] = {}
        for topic in topics:
            if topic in md.topics and md.topics[topic].error is None:
                for p in md.topics[topic].partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                    out[(topic, p)] = (int(low), int(high))
        return out
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka at {settings.kafka_bootstrap} did not answer: {exc}") from exc
    finally:
        consumer.close()


_PARTITION, _VALUE = Message.partition, Message.value  # C methods: map() calls them without a Python frame
_USER, _ITEM, _TS, _CODE, _ID = (operator.attrgetter(a) for a in ("user_id", "item_id", "ts", "type.code", "event_id"))
# msgpack writes a UUID as bin 8 of 16 bytes (0xc4 0x10 + the bytes): n ids are the last 18 n bytes.
_UUID_BYTES = msgspec.msgpack.Encoder(uuid_format="bytes").encode


def uuid_words(ids: list[uuid.UUID]) -> npt.NDArray[np.uint64]:
    """UUIDs as n × 2 uint64: the same 128 bits as ``uuid.UUID.bytes`` (big-endian words), built in C."""
    if not ids:
        return np.zeros((0, 2), np.uint64)
    buf = _UUID_BYTES(ids)
    body = np.frombuffer(buf, np.uint8, offset=len(buf) - 18 * len(ids)).reshape(-1, 18)[:, 2:]
    return np.ascontiguousarray(body).view(">u8").astype(np.uint64)


@dataclass
class Columns:
    """Valid events as parallel columns, chunk by chunk, and the invalid ones counted by reason."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    ts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    type_code: list[npt.NDArray[np.uint8]] = field(default_factory=list)  # EventType.code per event
    event_id: list[npt.NDArray[np.uint64]] = field(default_factory=list)  # n × 2 per chunk
    invalid: Counter[str] = field(default_factory=Counter)

    def add(self, values: Sequence[bytes | None], now: int, max_future_ms: int) -> None:
        """Decode ``values`` exactly as ``decode_event`` would and append the valid ones."""
        events, _, invalid = decode_many(values, now=now, max_future_ms=max_future_ms)
        self.invalid.update(exc.reason for _, exc in invalid)
        n = len(events)
        self.users += map(_USER, events)
        self.items += map(_ITEM, events)
        self.ts.append(np.fromiter(map(_TS, events), np.int64, count=n))
        self.type_code.append(np.fromiter(map(_CODE, events), np.uint8, count=n))
        self.event_id.append(uuid_words(list(map(_ID, events))))


@dataclass
class Part:
    """One reader's result: its own id dictionaries and codes."""

    users: list[str]
    items: list[str]
    arrays: dict[str, npt.NDArray[Any]]
    invalid: Counter[str]
    read: int


def read_topic(
    consumer: Consumer, topic: str, work: list[tuple[int, int, int]], out: Columns, max_future_ms: int,
    timeout: float, progress: Progress | None,
) -> int:
    """Consume ``[lo, hi)`` of each (partition, lo, hi) of one topic into ``out``; returns the messages taken.

    All partitions are assigned at once so librdkafka fetches them in parallel. A batch is checked per
    run of one partition: a run whose first message is the partition's next expected offset and whose
    length equals its offset span holds consecutive data messages (no error events, no gaps) and needs
    no per-message checks; any other run gets them.
    """
    next_offset = {p: lo for p, lo, _ in work}
    stop = {p: hi for p, _, hi in work}
    consumer.assign([TopicPartition(topic, p, lo) for p, lo, _ in work])
    taken, idle_since, last_report = 0, None, time.monotonic()
    while any(next_offset[p] < stop[p] for p in next_offset):
        # Never ask for more than can come: consume() waits its whole timeout for a batch to fill up.
        left = sum(stop[p] - next_offset[p] for p in next_offset)
        msgs = consumer.consume(max(1, min(CONSUME_BATCH, left)), timeout=0.5)
        if not msgs:
            idle_since = idle_since or time.monotonic()
            # Offsets can have gaps (transaction markers, compaction): done once the position passed the end.
            for tp in consumer.position([TopicPartition(topic, p) for p in next_offset]):
                if tp.offset >= stop[tp.partition]:
                    next_offset[tp.partition] = stop[tp.partition]
            if any(next_offset[p] < stop[p] for p in next_offset) and time.monotonic() - idle_since > timeout:
                raise KafkaUnavailable(f"timed out reading {topic} at {next_offset} of {stop}")
            continue
        idle_since = None
        parts = np.array(list(map(_PARTITION, msgs)))
        if parts.dtype != np.int64:  # an error event without a partition
            runs = [(0, len(msgs))]
        else:
            cuts = np.flatnonzero(parts[1:] != parts[:-1]) + 1
            bounds = [0, *cuts.tolist(), len(msgs)]
            runs = list(itertools.pairwise(bounds))
        values: list[bytes | None] = []
        for a, b in runs:
            first, last = msgs[a], msgs[b - 1]
            p = first.partition()
            if (p in next_offset and first.error() is None and last.error() is None and last.partition() == p
                    and first.offset() == next_offset[p] and (last.offset() or 0) - next_offset[p] + 1 == b - a):
                # events produced after the end offsets belong to the next run
                b = min(b, a + stop[p] - next_offset[p])
                values += map(_VALUE, msgs[a:b])
                next_offset[p] += b - a
            else:
                values += _checked(msgs[a:b], topic, next_offset, stop)
        out.add(values, now_ms(), max_future_ms)
        taken += len(values)
        if progress and time.monotonic() - last_report > 2.0:
            last_report = time.monotonic()
            progress(f"read {taken:,} events from {topic}")
    return taken


def _checked(msgs: list[Any], topic: str, next_offset: dict[int, int], stop: dict[int, int]) -> list[bytes | None]:
    """Values of the data messages of ``topic`` within each partition's range; advances ``next_offset``."""
    values: list[bytes | None] = []
    for m in msgs:
        if not is_data(m):
            continue
        p, offset = m.partition(), m.offset()
        if m.topic() != topic or p not in stop or offset is None or not next_offset[p] <= offset < stop[p]:
            continue
        values.append(m.value())
        next_offset[p] = offset + 1
    return values


def read_partitions(settings: Settings, work: list[tuple[str, int, int, int]], progress: Progress | None) -> Part:
    """Read every (topic, partition, lo, hi) of ``work`` and factorize the ids."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        out, read = Columns(), 0
        max_future_ms = int(settings.max_future_skew_s * 1000)
        consumer = new_consumer(settings)
        try:
            for topic in dict.fromkeys(t for t, _, _, _ in work):
                mine = [(p, lo, hi) for t, p, lo, hi in work if t == topic]
                read += read_topic(consumer, topic, mine, out, max_future_ms, 30.0, progress)
        finally:
            consumer.close()
        user_code, users = pd.factorize(np.array(out.users, dtype=object))
        item_code, items = pd.factorize(np.array(out.items, dtype=object))
        arrays = {"user_code": user_code.astype(np.int32), "item_code": item_code.astype(np.int32),
                  "ts": _joined(out.ts, np.int64), "type_code": _joined(out.type_code, np.uint8),
                  "event_id": _joined(out.event_id, np.uint64).reshape(-1)}
        return Part(list(users), list(items), arrays, out.invalid, read)
    finally:
        if was_enabled:
            gc.enable()


def _joined(chunks: list[npt.NDArray[Any]], dtype: Any) -> npt.NDArray[Any]:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype)
