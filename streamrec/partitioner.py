"""The partition of a keyed record, computed exactly as Kafka's producers do.

Every producer of the project (the collector, the simulator, the benchmarks, the tests, the dead-letter
tools) uses librdkafka's ``murmur2_random`` partitioner (:data:`KAFKA_PARTITIONER`), which is the Java
client's default: a record with a key goes to ``toPositive(murmur2(key)) % partitions``, a record without
one to a random partition. :func:`partition_for` is that rule in pure Python, so a process that knows a
user id and the topic's partition count (the API, a migration) finds the partition, and so the Redis hash
slot, of that user without asking Kafka. Direct producers must use the same partitioner
(docs/events.md#topics).
"""

from __future__ import annotations

KAFKA_PARTITIONER = "murmur2_random"
"""librdkafka's name of the Java client's default partitioner (``partitioner`` in a producer's config)."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data`` (``org.apache.kafka.common.utils.Utils.murmur2``), signed
    like the Java ``int`` it returns."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    body = length - length % 4
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length - body
    if tail == 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(number: int) -> int:
    """Kafka's ``Utils.toPositive``: the sign bit cleared (not ``abs``: ``-2**31`` maps to 0)."""
    return number & 0x7FFFFFFF


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition Kafka's murmur2 partitioner gives a record keyed ``key`` on a topic of ``partitions``
    partitions; a ``str`` key is its UTF-8 bytes (how events are keyed by ``user_id``)."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    data = key.encode() if isinstance(key, str) else key
    return to_positive(murmur2(data)) % partitions
