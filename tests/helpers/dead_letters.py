"""Reading a test's dead-letter topic back: what the worker sent there, keyed by the record's key."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from streamrec.settings import Settings


def read_dead_letters(s: Settings, expected: int, timeout_s: float = 30.0) -> dict[str, dict[str, str]]:
    """Message key -> headers (decoded) of the dead letters in ``s``'s dead-letter topic, once ``expected``
    distinct keys arrived or ``timeout_s`` passed."""
    consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    seen: dict[str, dict[str, str]] = {}
    try:
        parts = consumer.list_topics(s.topic_dead_letter, timeout=10).topics[s.topic_dead_letter]
        consumer.assign([TopicPartition(s.topic_dead_letter, p, 0) for p in parts.partitions])
        deadline = time.monotonic() + timeout_s
        while len(seen) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1.0):
                if msg.error() is None:
                    headers: list[tuple[str, bytes | None]] = list(msg.headers() or [])
                    seen[_text(msg.key())] = {k: _text(v) for k, v in headers}
    finally:
        consumer.close()
    return seen


def _text(raw: str | bytes | None) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw or ""
