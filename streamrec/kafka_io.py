"""The Kafka boundary: topic administration, the event producer and bounded reads.

Everything that talks to Kafka with confluent-kafka goes through here (the Faust worker uses aiokafka
through Faust). Clients connect lazily; :meth:`EventProducer.ping` checks the broker answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.events import Event
from streamrec.partitioner import KAFKA_PARTITIONER
from streamrec.settings import Settings


class KafkaUnavailable(RuntimeError):
    """The broker did not answer in time."""


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})


def ensure_topics(settings: Settings, topics: Iterable[str] | None = None, timeout: float = 30.0) -> list[str]:
    """Create the event and dead-letter topics (or ``topics``) when missing; returns those created."""
    wanted = list(topics) if topics is not None else [*settings.event_topics, settings.topic_dead_letter]
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka at {settings.kafka_bootstrap} did not answer: {exc}") from exc
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=settings.partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout,
    )
    for _topic, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return missing


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of every producer of the project: the brokers and the murmur2 partitioner
    (the Java client's default, :func:`streamrec.partitioner.partition_for`), then ``overrides``."""
    return {"bootstrap.servers": settings.kafka_bootstrap, "partitioner": KAFKA_PARTITIONER, "log_level": 0,
            **overrides}


class EventProducer:
    """Idempotent producer (acks=all) for events, keyed by user id, partitioned by murmur2 like the Java
    client. Connects on first use."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.settings = settings
        self._conf: dict[str, Any] = producer_config(settings, **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            **overrides,
        })
        self._producer: Producer | None = None

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._conf)
        return self._producer

    def send(self, event: Event, on_delivery: Any = None) -> None:
        """Queue one event on its topic; blocks briefly when the local queue is full."""
        self.send_raw(self.settings.topic_for(event.type.value), event.key, event.to_json_bytes(), on_delivery)

    def send_raw(self, topic: str, key: bytes | None, value: bytes, on_delivery: Any = None) -> None:
        """Queue raw bytes (used for tests of malformed input and for dead letters)."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued message; returns how many are still undelivered."""
        return int(self.producer.flush(timeout))

    def ping(self, timeout: float = 3.0) -> bool:
        """True when the cluster answers a metadata request."""
        try:
            self.producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True


class Record(NamedTuple):
    """One message read back from Kafka (a named tuple: the worker builds thousands per batch, and a tuple
    costs a third of a frozen dataclass to create)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes | None], ...] = ()  # as read from Kafka; empty for records built by hand


def _probe(settings: Settings) -> Consumer:
    return Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "streamrec-probe",
                     "enable.auto.commit": False, "log_level": 0})


def end_offsets(settings: Settings, topics: Iterable[str], timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of ``topics``."""
    consumer = _probe(settings)
    try:
        out: dict[tuple[str, int], int] = {}
        md = consumer.list_topics(timeout=timeout)
        for topic in topics:
            if topic not in md.topics:
                continue
            for p in md.topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                out[(topic, p)] = high
        return out
    finally:
        consumer.close()


def offsets_for_times(
    settings: Settings, topics: Iterable[str], ts_ms: int, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """Per partition of ``topics``: the first offset whose timestamp is at or after ``ts_ms``.

    A partition with no such record gets its high watermark (nothing to read from there).
    """
    consumer = _probe(settings)
    try:
        md = consumer.list_topics(timeout=timeout)
        wanted = [TopicPartition(t, p, ts_ms) for t in topics if t in md.topics for p in md.topics[t].partitions]
        out: dict[tuple[str, int], int] = {}
        for tp in consumer.offsets_for_times(wanted, timeout=timeout) if wanted else []:
            if tp.error is not None:
                raise KafkaException(tp.error)
            offset = tp.offset
            if offset < 0:  # no record that recent
                offset = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)[1]
            out[(tp.topic, tp.partition)] = offset
        return out
    finally:
        consumer.close()


def is_data(message: Any) -> bool:
    """True for a message that carries data; False for a partition-EOF event; raises any other error."""
    err = message.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        return False
    raise KafkaException(err)


def headers_of(message: Any) -> tuple[tuple[str, bytes | None], ...]:
    """A consumed message's headers, in order (empty when it has none)."""
    return tuple(message.headers() or ())


def read_range(
    settings: Settings,
    start: dict[tuple[str, int], int],
    end: dict[tuple[str, int], int],
    timeout: float = 30.0,
) -> Iterator[Record]:
    """Every record with ``start[tp] <= offset < end[tp]``, partition by partition order preserved.

    A partition is done at its last record, or once the consumer's position has passed ``end`` (offsets
    can have gaps: transaction markers, compaction). Raises :class:`KafkaUnavailable` after ``timeout``
    seconds without progress.
    """
    todo = {tp: off for tp, off in end.items() if off > start.get(tp, 0)}
    if not todo:
        return
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "streamrec-reader",
                         "enable.auto.commit": False, "log_level": 0, "fetch.max.bytes": 64 * 1024 * 1024,
                         "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(t, p, start.get((t, p), 0)) for (t, p) in todo])
        remaining = dict(todo)
        left = {tp: off - start.get(tp, 0) for tp, off in todo.items()}  # an upper bound of what is left
        idle_deadline = None
        while remaining:
            # Never ask for more than can come: consume() waits its whole timeout for a batch to fill up.
            msgs = consumer.consume(max(1, min(10_000, sum(left[tp] for tp in remaining))), timeout=0.5)
            if not msgs:
                for pos in consumer.position([TopicPartition(t, p) for t, p in remaining]):
                    if pos.offset >= remaining[(pos.topic, pos.partition)]:
                        del remaining[(pos.topic, pos.partition)]
                idle_deadline = idle_deadline or time.monotonic() + timeout
                if remaining and time.monotonic() > idle_deadline:
                    raise KafkaUnavailable(f"timed out reading {remaining}")
                continue
            idle_deadline = None
            for m in msgs:
                if not is_data(m):
                    continue
                topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                stop = remaining.get((topic, partition))
                if stop is None or offset >= stop:
                    continue
                left[(topic, partition)] = stop - offset - 1
                yield Record(topic, partition, offset, m.key(), m.value(), m.timestamp()[1], headers_of(m))
                if offset + 1 >= stop:
                    del remaining[(topic, partition)]
    finally:
        consumer.close()


def read_all(settings: Settings, topics: Iterable[str], timeout: float = 30.0) -> Iterator[Record]:
    """Every record currently in ``topics``, from the beginning to the high watermark."""
    topics = list(topics)
    yield from read_range(settings, {}, end_offsets(settings, topics), timeout)
