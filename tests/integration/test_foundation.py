"""The foundation on real servers: simulate → Kafka → back intact and in per-user order; Redis round trip."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from streamrec import simulate
from streamrec.events import Event, decode_event
from streamrec.kafka_io import EventProducer, read_all
from streamrec.settings import Settings
from streamrec.store import RedisStore, from_bytes, to_bytes


def test_simulated_events_come_back_intact_and_in_per_user_order(settings: Settings) -> None:
    produced: list[Event] = []
    producer = EventProducer(settings)

    def emit(event: Event) -> None:
        produced.append(event)
        producer.send(event)

    stats = simulate.run(emit, rate=0, count=3_000, store=simulate.Storefront(simulate.SimConfig(seed=7)))
    assert producer.flush(30) == 0
    assert stats.events == 3_000 and stats.by_type["purchase"] > 0

    records = list(read_all(settings, settings.event_topics))
    assert len(records) == len(produced)
    back = [decode_event(r.value) for r in records]
    assert sorted(back, key=lambda e: str(e.event_id)) == sorted(produced, key=lambda e: str(e.event_id))

    # Keyed by user: each user's events sit in one partition per topic, in the order they were produced.
    partitions: dict[tuple[str, str], set[int]] = defaultdict(set)
    for rec, ev in zip(records, back, strict=True):
        assert rec.key == ev.user_id.encode()
        assert rec.topic == settings.topic_for(ev.type.value)
        partitions[(rec.topic, ev.user_id)].add(rec.partition)
    assert all(len(p) == 1 for p in partitions.values())
    order = {e.event_id: i for i, e in enumerate(produced)}
    per_user: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rec, ev in sorted(zip(records, back, strict=True), key=lambda x: (x[0].topic, x[0].partition, x[0].offset)):
        per_user[(rec.topic, ev.user_id)].append(order[ev.event_id])
    assert all(seq == sorted(seq) for seq in per_user.values())


def test_redis_round_trip_of_a_vector_and_json(settings: Settings) -> None:
    store = RedisStore(settings)
    assert store.ping()
    vec = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    key = f"{settings.redis_prefix}:probe"
    store.client.set(key, to_bytes(vec))
    raw = store.client.get(key)
    assert raw is not None and len(raw) == 64 * 4
    np.testing.assert_array_equal(from_bytes(raw), vec)
    store.client.set(key + ":json", json.dumps({"a": 1}))
    assert json.loads(store.client.get(key + ":json") or b"null") == {"a": 1}


def test_bad_producer_endpoint_reports_unreachable() -> None:
    # A closed loopback port: ping must say no rather than hang or raise.
    producer = EventProducer(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert producer.ping(timeout=1.0) is False


def test_delete_prefix_removes_every_key_of_the_prefix_and_nothing_else(settings: Settings) -> None:
    store = RedisStore(settings)
    mine = [f"{settings.redis_prefix}:k{i}" for i in range(2_500)]  # more than one scan page and one UNLINK
    other = f"{settings.redis_prefix}-other:k"  # a prefix that merely starts the same way
    pipe = store.client.pipeline(transaction=False)  # on a cluster, keys of many slots: no MSET
    for k in mine:
        pipe.set(k, b"x")
    pipe.execute()
    store.client.set(other, b"kept")
    try:
        assert store.delete_prefix() == len(mine)
        assert store.client.exists(*mine) == 0
        assert store.client.get(other) == b"kept"
    finally:
        store.client.delete(other)
        store.close()
