"""`streamrec migrate-layout` moves a deployment's user state to per-partition keys, and to a new partition
count, without losing or doubling anything: the worker then continues exactly once on the moved state."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from models.foldin import gram
from stream_processors import new_items as ni
from stream_processors.processor import BatchProcessor
from streamrec.events import Event, EventType, now_ms
from streamrec.kafka_io import Record
from streamrec.partitioner import partition_for
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.content import get_profile, put_profile
from streamrec.store.covisitation import neighbours
from streamrec.store.layout import Layout, LayoutMismatch, ensure_layout, legacy_keys, read_layout
from streamrec.store.models import activate, get_user_vectors, write_version
from streamrec.store.trending import top_popular, top_trending
from streamrec.store.users import Interaction, applied_offsets, event_counts, read_histories
from tests.helpers.processes import run_cli

USERS = [f"user-{n}" for n in range(40)]
ITEMS = [f"i{n}" for n in range(12)]
F = 4


def event(user: str, item: str, event_id: uuid.UUID | None = None) -> Event:
    return Event(event_id=event_id or uuid.uuid4(), user_id=user, item_id=item, type=EventType("click"), ts=now_ms())


def record(s: Settings, e: Event, offset: int, partitions: int | None = None) -> Record:
    p = partition_for(e.user_id, partitions or s.partitions)
    return Record(s.topic_clicks, p, offset, e.key, e.to_json_bytes(), e.ts)


def publish(store: RedisStore) -> None:
    y = np.random.default_rng(1).standard_normal((len(ITEMS), F)).astype(np.float32)
    write_version(store, "v1", {}, ITEMS, y, gram(y), [], np.zeros((0, F), dtype=np.float32))
    activate(store, "v1")


def write_format_1(s: Settings, store: RedisStore, dedup_id: uuid.UUID) -> dict[str, list[Interaction]]:
    """State as a worker before per-partition keys left it (key names of that layout, written here)."""
    c, p, now = store.client, s.redis_prefix, now_ms()
    histories = {u: [Interaction(ITEMS[(n + j) % len(ITEMS)], 1.0, now - 1000 * j, "click") for j in range(3)]
                 for n, u in enumerate(USERS)}
    for u, h in histories.items():
        c.rpush(f"{p}:hist:{{{u}}}", *(i.encode() for i in h))
    c.hset(f"{p}:user_events", mapping=dict.fromkeys(USERS, 3))
    c.hset(f"{p}:profiles", mapping={u: json.dumps({"age": n}) for n, u in enumerate(USERS[:5])})
    c.hset(f"{p}:model:v1:users", mapping={u: np.full(F, n, dtype="<f4").tobytes() for n, u in enumerate(USERS)})
    c.hset(f"{p}:model:v1:user_ts", mapping=dict.fromkeys(USERS, now))
    c.hset(f"{p}:offsets:{s.consumer_group}", mapping={f"{s.topic_clicks}:{n}": 100 for n in range(s.partitions)})
    c.set(f"{p}:offsets:{s.consumer_group}:fence:3", 7)
    bucket = now // 1000 // max(1, (s.dedup_window_s + 1) // 2)
    c.sadd(f"{p}:dedup:{bucket}", dedup_id.bytes)
    c.expire(f"{p}:dedup:{bucket}", 3_600)
    c.zadd(f"{p}:popular", {"i3": 5.0, "i4": 2.0})
    c.zadd(f"{p}:trend:m:{now // 60_000}", {"i4": 3.0})
    c.hset(f"{p}:covis:i1", mapping={"": now, "\x01": 1, "i2": 4.0})
    c.hset(f"{p}:model:v1:pending_n", "brand-new", 1)
    c.rpush(f"{p}:model:v1:pending:{{brand-new}}", f"{USERS[2]}\x1f1")
    return histories


def test_a_format_1_redis_moves_to_per_partition_keys_and_the_worker_continues_exactly_once(
        make_settings: Callable[..., Settings]) -> None:
    s = make_settings(als_factors=F)
    store = RedisStore(s)
    publish(store)
    retried = uuid.uuid4()
    histories = write_format_1(s, store, retried)
    with pytest.raises(LayoutMismatch, match="migrate-layout"):  # the worker refuses to start on it
        ensure_layout(store)

    res = run_cli(s, "migrate-layout")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["histories"] == len(USERS) and summary["fields"]["user_events"] == len(USERS)
    assert read_layout(store) == Layout(2, s.partitions) and legacy_keys(store) == []
    assert {u: [i.item for i in h] for u, h in read_histories(store, USERS).items()} == {
        u: [i.item for i in h] for u, h in histories.items()}
    assert event_counts(store, USERS) == dict.fromkeys(USERS, 3)
    assert [get_profile(store, u) for u in USERS[:5]] == [{"age": n} for n in range(5)]
    vectors = get_user_vectors(store, "v1", USERS)
    assert all(v is not None and float(v[0]) == n for n, v in enumerate(vectors))
    assert applied_offsets(store, s.consumer_group) == {f"{s.topic_clicks}:{n}": 100 for n in range(s.partitions)}
    assert top_popular(store, k=5) == [("i3", 5.0), ("i4", 2.0)] and top_trending(store, "1h")[0][0] == "i4"
    assert [n for n, _ in neighbours(store, ["i1"], now_ms(), 3600.0, 10)["i1"]] == ["i2"]
    assert store.client.lrange(ni.pending_list_key(store, "v1", "brand-new"), 0, -1) == [f"{USERS[2]}\x1f1".encode()]
    assert store.client.hget(ni.pending_count_key(store, "v1"), "brand-new") == b"1"

    # Kafka redelivers an applied record, a client retries an applied event, and a new event arrives.
    u = USERS[0]
    proc = BatchProcessor(s, store)
    result = proc.process([record(s, event(u, "i5"), 90), record(s, event(u, "i6", retried), 101),
                           record(s, event(u, "i7"), 102)])
    assert (result.applied, result.redelivered, result.duplicates) == (1, 1, 1)
    assert event_counts(store, [u]) == {u: 4}
    assert [i.item for i in read_histories(store, [u])[u]][:2] == ["i7", histories[u][0].item]
    store.close()


def test_more_partitions_move_each_user_to_its_new_partition(make_settings: Callable[..., Settings]) -> None:
    four = make_settings(als_factors=F, partitions=4)
    store = RedisStore(four)
    publish(store)
    ensure_layout(store)
    put_profile(store, USERS[1], {"age": 30})
    BatchProcessor(four, store).process([record(four, event(u, ITEMS[n % 12]), n) for n, u in enumerate(USERS)])
    before = read_histories(store, USERS)
    vectors = get_user_vectors(store, "v1", USERS)
    store.close()

    eight = four.model_copy(update={"partitions": 8})
    moved = RedisStore(eight)
    with pytest.raises(LayoutMismatch, match="laid out for 4 partitions"):
        ensure_layout(moved)
    res = run_cli(eight, "migrate-layout")
    assert res.returncode == 0, res.stderr
    assert read_layout(moved) == Layout(2, 8)
    assert read_histories(moved, USERS) == before and event_counts(moved, USERS) == dict.fromkeys(USERS, 1)
    after = get_user_vectors(moved, "v1", USERS)
    assert all(a is not None and b is not None and np.array_equal(a, b) for a, b in zip(after, vectors, strict=True))
    assert get_profile(moved, USERS[1]) == {"age": 30}
    assert sum(partition_for(u, 8) != partition_for(u, 4) for u in USERS) > 10  # most users did move
    res = run_cli(eight, "migrate-layout")  # once more: nothing left to move
    assert res.returncode == 0 and "already follows this layout" in res.stderr
    moved.close()
