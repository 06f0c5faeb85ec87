"""Consumer lag, read from Kafka: per group, topic and partition, in messages and in seconds.

Lag is what ``kafka-consumer-groups --describe`` shows: the partition's log-end offset (high watermark)
minus the group's committed offset. The worker commits its position to Kafka like any consumer (it also
keeps applied offsets in Redis for exactly-once, but Kafka's committed offset is where a restarted or
rebalanced worker resumes, so that is what lag is measured against).

Lag in seconds is the age of the oldest unprocessed event: the broker timestamp of the message at the
committed offset, read with a short-lived assigned consumer that never joins or commits for the group,
compared with now; 0 when lag is 0. A partition the group has never committed counts from the log start,
as the worker (``auto.offset.reset=earliest``) would read it.

The status of each group (OK, LAGGING, STALLED) is evaluated over a window of observations by
:mod:`ops.lag_status`; this module only measures.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamrec.kafka_io import KafkaUnavailable, admin_client
from streamrec.settings import Settings

TP = tuple[str, int]


class LagError(RuntimeError):
    """Lag could not be measured (a group or topic is unknown, or Kafka answered with an error)."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition as a group sees it."""

    topic: str
    partition: int
    current_offset: int | None  # the group's committed offset; None when it never committed here
    log_start_offset: int
    log_end_offset: int
    lag: int
    lag_seconds: float | None  # None when the oldest unprocessed message's timestamp could not be read
    status: str = "OK"

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "partition": self.partition, "current_offset": self.current_offset,
            "log_start_offset": self.log_start_offset, "log_end_offset": self.log_end_offset,
            "lag": self.lag, "lag_seconds": self.lag_seconds, "status": self.status,
        }


@dataclass
class GroupLag:
    """One consumer group: its Kafka state, members, status and partitions (sorted by topic, partition)."""

    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)
    status: str = "OK"

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def max_lag_seconds(self) -> float:
        return max((p.lag_seconds or 0.0 for p in self.partitions), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "state": self.state, "members": self.members, "total_lag": self.total_lag,
            "max_lag_seconds": self.max_lag_seconds, "partitions": [p.as_dict() for p in self.partitions],
        }


def _result(fut: Any, timeout: float, what: str) -> Any:
    try:
        return fut.result(timeout)
    except KafkaException as exc:
        raise LagError(f"{what}: {exc.args[0]}") from exc
    except TimeoutError as exc:
        raise KafkaUnavailable(f"{what}: no answer in {timeout:g} s") from exc


def committed_offsets(admin: AdminClient, group: str, timeout: float) -> dict[TP, int]:
    """Every offset ``group`` has committed, by (topic, partition)."""
    futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
    res = _result(futs[group], timeout, f"committed offsets of group {group!r}")
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions or [] if tp.offset >= 0}


def describe_group(admin: AdminClient, group: str, timeout: float) -> tuple[str, int]:
    """The group's state as Kafka names it (STABLE, EMPTY, DEAD, ...) and how many members it has."""
    fut = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
    try:
        desc = fut.result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return "DEAD", 0
        raise LagError(f"describe group {group!r}: {exc.args[0]}") from exc
    except TimeoutError as exc:
        raise KafkaUnavailable(f"describe group {group!r}: no answer in {timeout:g} s") from exc
    state = getattr(desc.state, "name", str(desc.state))
    return state, len(desc.members or [])


def topic_partitions(admin: AdminClient, topics: Iterable[str], timeout: float, strict: bool = True) -> list[TP]:
    """Every partition of ``topics``; a topic that does not exist raises :class:`LagError` when ``strict``
    (the user named it), else is left out (a group's offsets can outlive a deleted topic)."""
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka did not answer a metadata request: {exc}") from exc
    out: list[TP] = []
    for topic in topics:
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            if strict:
                raise LagError(f"topic {topic!r} does not exist")
            continue
        out.extend((topic, p) for p in sorted(meta.partitions))
    return out


def watermarks(admin: AdminClient, tps: Sequence[TP], timeout: float) -> dict[TP, tuple[int, int]]:
    """(log start, log end) offsets of each partition, in two batched ListOffsets requests."""
    if not tps:
        return {}
    out: dict[TP, list[int]] = {tp: [0, 0] for tp in tps}
    for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
        futs = admin.list_offsets({TopicPartition(t, p): spec for t, p in tps}, request_timeout=timeout)
        for tp, fut in futs.items():
            out[(tp.topic, tp.partition)][i] = int(_result(fut, timeout, f"offsets of {tp.topic}").offset)
    return {tp: (lo, hi) for tp, (lo, hi) in out.items()}


def oldest_timestamps(settings: Settings, positions: dict[TP, int], timeout: float) -> dict[TP, int]:
    """Broker timestamp (epoch ms) of the first message at or after each position; missing when unread.

    A throwaway consumer is *assigned* the partitions (it never joins a group and never commits), and
    prefetches as little as possible since only one message per partition is wanted.
    """
    if not positions:
        return {}
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap, "group.id": "streamrec-lag-probe",
        "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": "read_uncommitted",
        "queued.min.messages": 1, "fetch.wait.max.ms": 50, "log_level": 0,
    })
    found: dict[TP, int] = {}
    try:
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in positions.items()])
        deadline = time.monotonic() + timeout
        todo = set(positions)
        while todo and time.monotonic() < deadline:
            for m in consumer.consume(len(todo) * 4, timeout=0.2):
                tp = (str(m.topic()), int(m.partition() or 0))
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(tp)  # nothing at or after the position (yet)
                    continue
                if tp in todo:
                    kind, ts = m.timestamp()
                    if kind != 0 and ts >= 0:  # 0 = TIMESTAMP_NOT_AVAILABLE
                        found[tp] = int(ts)
                    todo.discard(tp)
    finally:
        consumer.close()
    return found


def _next(committed: int | None, marks: tuple[int, int]) -> int:
    """The offset a consumer resumes at: its committed offset, or the log start (earliest reset)."""
    return marks[0] if committed is None else max(committed, marks[0])


def measure(
    settings: Settings,
    groups: Sequence[str],
    topics: Sequence[str] | None = None,
    *,
    timeout: float = 5.0,
    now_ms: int | None = None,
    admin: AdminClient | None = None,
) -> list[GroupLag]:
    """Lag of each group on ``topics`` (default: the topics it committed to, plus the event topics for the
    worker's group, so a worker that never committed still shows its backlog). Status is left "OK";
    :func:`ops.lag_status.evaluate_groups` fills it in. Pass ``admin`` to reuse one client."""
    admin = admin or admin_client(settings)
    wanted: dict[str, dict[TP, int | None]] = {}
    for group in groups:
        committed = committed_offsets(admin, group, timeout)
        if topics:
            names = list(topics)
            committed = {tp: off for tp, off in committed.items() if tp[0] in names}
        else:
            names = sorted({t for t, _ in committed} | (set(settings.event_topics)
                                                         if group == settings.consumer_group else set()))
        tps = topic_partitions(admin, names, timeout, strict=bool(topics))
        wanted[group] = {tp: committed.get(tp) for tp in sorted(tps)}
    all_tps = sorted({tp for per in wanted.values() for tp in per})
    marks = watermarks(admin, all_tps, timeout)
    # The next message each group would process, where it has a backlog; groups at different offsets of one
    # partition need separate reads, so positions are packed into batches of at most one per partition.
    needed = {(tp, _next(off, marks[tp])) for per in wanted.values() for tp, off in per.items()
              if _next(off, marks[tp]) < marks[tp][1]}
    batches: list[dict[TP, int]] = []
    for tp, pos in sorted(needed):
        free = next((b for b in batches if tp not in b), None)
        if free is None:
            batches.append({tp: pos})
        else:
            free[tp] = pos
    stamps: dict[tuple[TP, int], int] = {}
    for batch in batches:
        stamps.update({(tp, batch[tp]): ts for tp, ts in oldest_timestamps(settings, batch, timeout).items()})
    now = int(now_ms if now_ms is not None else time.time() * 1000)
    out: list[GroupLag] = []
    for group, per in wanted.items():
        state, members = describe_group(admin, group, timeout)
        rows: list[PartitionLag] = []
        for (topic, partition), off in per.items():
            lo, hi = marks[(topic, partition)]
            lag = max(0, hi - (lo if off is None else off))
            ts = stamps.get(((topic, partition), _next(off, (lo, hi))))
            secs: float | None = 0.0 if lag == 0 else (None if ts is None else max(0, now - ts) / 1000.0)
            rows.append(PartitionLag(topic, partition, off, lo, hi, lag, secs))
        out.append(GroupLag(group, state, members, rows))
    return out
