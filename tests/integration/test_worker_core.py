"""The worker's processing core (BatchProcessor) on real Redis, without Kafka in the loop.

Records are built the way Kafka delivers them (topic, partition, offset, raw bytes); what is checked is
what the API and the batch job rely on: histories, counts, vectors equal to the fold-in of the stored
history, trending, exactly-once under redelivery, duplicates and concurrent writers, new items.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from models.foldin import fold_in_items, fold_in_users, gram
from models.weighting import weighted_matrix
from stream_processors.processor import BatchProcessor
from streamrec.events import Event, EventType, now_ms
from streamrec.kafka_io import Record
from streamrec.partitioner import partition_for
from streamrec.settings import Settings
from streamrec.store import RedisStore, from_bytes
from streamrec.store.models import activate, get_user_vectors, load_model, write_version
from streamrec.store.trending import add_counts, add_counts_many, top_popular, top_trending
from streamrec.store.users import Interaction, append_histories, append_history, event_counts, read_histories

FACTORS = 8


@pytest.fixture
def wsettings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(als_factors=FACTORS, new_item_min_interactions=3, history_cap=50)


@pytest.fixture
def store(wsettings: Settings) -> Iterator[RedisStore]:
    s = RedisStore(wsettings)
    yield s
    s.close()


def publish(store: RedisStore, version: str, items: list[str], seed: int = 0) -> np.ndarray:
    y = (np.random.default_rng(seed).standard_normal((len(items), FACTORS)) * 0.3).astype(np.float32)
    write_version(store, version, {}, items, y, gram(y), [], np.zeros((0, FACTORS), dtype=np.float32))
    activate(store, version)
    return y


def event(user: str, item: str, etype: str = "click", ts: int | None = None, event_id: uuid.UUID | None = None,
          category: str | None = None) -> Event:
    return Event(event_id=event_id or uuid.uuid4(), user_id=user, item_id=item, type=EventType(etype),
                 ts=ts or now_ms(), context={"category": category} if category else None)


class Feed:
    """Hands out Kafka-like records with increasing offsets per partition, each in its user's murmur2
    partition (as Kafka's producers put them)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.next: Counter[tuple[str, int]] = Counter()

    def records(self, events: list[Event]) -> list[Record]:
        out = []
        for e in events:
            topic = self.s.topic_for(e.type.value)
            part = partition_for(e.user_id, self.s.partitions)
            off = self.next[(topic, part)]
            self.next[(topic, part)] += 1
            out.append(Record(topic, part, off, e.key, e.to_json_bytes(), e.ts))
        return out


def expected_vectors(store: RedisStore, settings: Settings, users: list[str]) -> dict[str, np.ndarray]:
    """fold_in_users of each user's stored history against the current version (known items only)."""
    model = load_model(store)
    assert model is not None
    hist = read_histories(store, users)
    out = {}
    for u in users:
        known = [i for i in hist[u] if i.item in model.item_index]
        if not known:
            continue
        m = weighted_matrix([0] * len(known), [model.item_index[i.item] for i in known], [i.weight for i in known],
                            shape=(1, len(model.item_ids)))
        out[u] = fold_in_users(model.item_factors, model.gram, m, settings.als_regularization, settings.als_alpha)[0]
    return out


def stored_vector(store: RedisStore, version: str, user: str) -> np.ndarray | None:
    return get_user_vectors(store, version, [user])[0]


def test_vectors_equal_fold_in_of_history_and_counts_match(wsettings: Settings, store: RedisStore) -> None:
    items = [f"i{i}" for i in range(40)]
    publish(store, "v1", items)
    rng = np.random.default_rng(1)
    events = [event(f"u{rng.integers(15)}", items[rng.integers(40)], "purchase" if rng.random() < 0.1 else "click")
              for _ in range(600)]
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    for start in range(0, len(events), 97):
        proc.process(feed.records(events[start : start + 97]))
    produced = Counter(e.user_id for e in events)
    assert event_counts(store, sorted(produced)) == dict(produced)
    hist = read_histories(store, sorted(produced))
    for u, n in produced.items():
        assert len(hist[u]) == min(n, wsettings.history_cap)
        newest = [e for e in events if e.user_id == u][-1]
        assert (hist[u][0].item, hist[u][0].ts_ms) == (newest.item_id, newest.ts)
    want = expected_vectors(store, wsettings, sorted(produced))
    assert set(want) == set(produced)
    for u, vec in want.items():
        got = stored_vector(store, "v1", u)
        assert got is not None
        np.testing.assert_allclose(got, vec, rtol=1e-4, atol=1e-5)


def test_redelivery_and_duplicate_event_ids_apply_once(wsettings: Settings, store: RedisStore) -> None:
    publish(store, "v1", ["a", "b", "c"])
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    first = [event("u1", "a"), event("u1", "b"), event("u2", "c", "purchase")]
    records = feed.records(first)
    r1 = proc.process(records)
    assert (r1.applied, r1.redelivered, r1.duplicates) == (3, 0, 0)
    r2 = proc.process(records)  # Kafka redelivers after a crash or rebalance
    assert (r2.applied, r2.redelivered) == (0, 3)
    again = [event("u1", "c", event_id=first[0].event_id), event("u3", "a")]  # a client retry, new offset
    r3 = proc.process(feed.records([*again, again[1]]))  # and a duplicate inside one batch
    assert (r3.applied, r3.duplicates) == (1, 2)
    assert event_counts(store, ["u1", "u2", "u3"]) == {"u1": 2, "u2": 1, "u3": 1}
    fresh = BatchProcessor(wsettings, store)  # another process: state only from Redis
    assert fresh.process(records).redelivered == 3
    assert event_counts(store, ["u1"]) == {"u1": 2}


def test_concurrent_writer_on_same_partition_forces_recompute(wsettings: Settings, store: RedisStore) -> None:
    publish(store, "v1", [f"i{i}" for i in range(10)])
    feed = Feed(wsettings)
    mine, theirs = BatchProcessor(wsettings, store), BatchProcessor(wsettings, store)
    mine.process(feed.records([event("u1", "i1")]))
    other_batch = feed.records([event("u1", "i2", "purchase")])
    bad = Record(wsettings.topic_clicks, 0, 10_000, b"u1", b"not json", 0)
    calls = []

    def sneak_in(letters: object) -> None:
        # runs between this batch's reads and its MULTI/EXEC: another worker applies an event of u1
        if not calls:
            calls.append(theirs.process(other_batch))

    mine._dead_letters = sneak_in
    result = mine.process([*feed.records([event("u1", "i3")]), bad])
    assert result.attempts == 2 and result.applied == 1
    assert event_counts(store, ["u1"]) == {"u1": 3}
    assert [i.item for i in read_histories(store, ["u1"])["u1"]] == ["i3", "i2", "i1"]
    np.testing.assert_allclose(stored_vector(store, "v1", "u1"), expected_vectors(store, wsettings, ["u1"])["u1"],
                               rtol=1e-4, atol=1e-5)


def test_a_conflict_on_one_partition_of_a_batch_applies_every_partition_once(wsettings: Settings,
                                                                           store: RedisStore) -> None:
    """A batch over several partitions whose last partition gets a concurrent writer: on a Redis Cluster the
    other partitions commit in the first attempt and only the last is recomputed; on one Redis the batch is.
    Either way every event counts once: histories, counters, trending (new items' counts too)."""
    publish(store, "v1", [f"i{i}" for i in range(10)])
    feed = Feed(wsettings)
    users = [f"u{n}" for n in range(12)]
    parts = {u: partition_for(u, wsettings.partitions) for u in users}
    assert len(set(parts.values())) >= 3
    last = max(users, key=lambda u: parts[u])
    mine, theirs = BatchProcessor(wsettings, store), BatchProcessor(wsettings, store)
    mine.refresh_model()
    other_batch = feed.records([event(last, "i2", "purchase")])
    bad = Record(wsettings.topic_clicks, parts[last], 10_000, last.encode(), b"not json", 0)
    calls = []

    def sneak_in(letters: object) -> None:  # between the batch's reads and its EXECs
        if not calls:
            calls.append(theirs.process(other_batch))

    mine._dead_letters = sneak_in
    evs = [event(u, item) for u in users for item in ("i1", "new-item")]
    result = mine.process([*feed.records(evs), bad])
    assert result.attempts == 2 and result.applied == len(evs)
    assert result.dead_letters == {"bad_json": 1}
    assert event_counts(store, users) == {u: 3 if u == last else 2 for u in users}
    assert [i.item for i in read_histories(store, [last])[last]] == ["new-item", "i1", "i2"]
    popular = dict(top_popular(store))
    assert popular["i1"] == pytest.approx(len(users) * wsettings.click_weight)
    assert popular["new-item"] == pytest.approx(len(users) * wsettings.click_weight)
    assert popular["i2"] == pytest.approx(wsettings.purchase_weight)
    pending = store.client.hget(store.keys.model("v1", "pending_n"), "new-item")
    assert int(pending) == len(users)
    assert store.client.hexists(store.keys.model("v1", "new_items"), "new-item")  # folded in, once enough


def test_no_model_yet_records_events_then_first_model_folds_full_history(wsettings: Settings,
                                                                           store: RedisStore) -> None:
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    r = proc.process(feed.records([event("u1", "i1", category="toys"), event("u1", "i2")]))
    assert (r.applied, r.vectors, r.version) == (2, 0, None)
    assert event_counts(store, ["u1"]) == {"u1": 2}
    assert [i for i, _ in top_trending(store, "1h", category="toys")] == ["i1"]
    publish(store, "v1", ["i1", "i2", "i3"])
    r = proc.process(feed.records([event("u1", "i3")]))
    assert (r.vectors, r.version) == (1, "v1")
    np.testing.assert_allclose(stored_vector(store, "v1", "u1"), expected_vectors(store, wsettings, ["u1"])["u1"],
                               rtol=1e-4, atol=1e-5)


def test_model_swap_between_batches_writes_under_new_version(wsettings: Settings, store: RedisStore) -> None:
    items = [f"i{i}" for i in range(20)]
    publish(store, "v1", items, seed=1)
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    proc.process(feed.records([event("u1", "i1"), event("u2", "i2")]))
    publish(store, "v2", items, seed=2)
    r = proc.process(feed.records([event("u1", "i3")]))
    assert r.version == "v2" and r.attempts == 2  # the first attempt saw the new version and started over
    assert stored_vector(store, "v2", "u2") is None  # u2 has no event since: the batch job refolds it
    np.testing.assert_allclose(stored_vector(store, "v2", "u1"), expected_vectors(store, wsettings, ["u1"])["u1"],
                               rtol=1e-4, atol=1e-5)


def test_new_item_is_folded_in_and_then_used_for_users(wsettings: Settings, store: RedisStore) -> None:
    items = [f"i{i}" for i in range(30)]
    publish(store, "v1", items)
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    proc.new_item_refresh_s = 0.0
    users = [f"u{k}" for k in range(4)]
    proc.process(feed.records([event(u, items[k * 3 + j]) for k, u in enumerate(users) for j in range(3)]))
    before = {u: stored_vector(store, "v1", u) for u in users}
    r = proc.process(feed.records([event(u, "brand-new", "purchase") for u in users[:3]]))
    assert r.new_items == 1
    got = from_bytes(store.client.hget(store.keys.model("v1", "new_items"), "brand-new"))
    x = np.stack([before[u] for u in users[:3]])
    all_x = np.stack([v for v in before.values()])
    want = fold_in_items(x, gram(all_x), weighted_matrix([0, 0, 0], [0, 1, 2], [wsettings.purchase_weight] * 3),
                         wsettings.als_regularization, wsettings.als_alpha)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the fourth user now touches it: the fold-in counts the new item among the user's items
    proc.process(feed.records([event(users[3], "brand-new")]))
    model = load_model(store)
    assert model is not None
    y = np.vstack([model.item_factors, got[None, :]])
    hist = read_histories(store, [users[3]])[users[3]]
    index = {**model.item_index, "brand-new": len(items)}
    m = weighted_matrix([0] * len(hist), [index[i.item] for i in hist], [i.weight for i in hist], shape=(1, len(y)))
    want_u = fold_in_users(y, model.gram, m, wsettings.als_regularization, wsettings.als_alpha)[0]
    np.testing.assert_allclose(stored_vector(store, "v1", users[3]), want_u, rtol=1e-4, atol=1e-5)


def test_trending_counts_by_category_and_weight(wsettings: Settings, store: RedisStore) -> None:
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    evs = [event("u1", "i1", category="toys"), event("u2", "i1", category="toys"),
           event("u3", "i2", "purchase", category="books"), event("u4", "i3")]
    proc.process(feed.records(evs))
    w_click, w_buy = wsettings.click_weight, wsettings.purchase_weight
    totals = {"i1": 2 * w_click, "i2": w_buy, "i3": w_click}
    assert dict(top_popular(store)) == totals
    assert dict(top_popular(store, category="books")) == {"i2": w_buy}
    assert dict(top_trending(store, "1h", category="toys")) == {"i1": pytest.approx(2 * w_click)}
    ranked = [i for i, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    assert [i for i, _ in top_trending(store, "1d")] == ranked


def test_add_to_cart_and_view_round_trip_with_their_weights(make_settings: Callable[..., Settings],
                                                             store: RedisStore) -> None:
    """A registry type is applied like any other: on its topic (the clicks topic), with its weight setting,
    its name kept in the history, its weight in trending and in the folded-in vector."""
    s = make_settings(als_factors=FACTORS, history_cap=50, add_to_cart_weight=2.5)
    items = [f"i{i}" for i in range(10)]
    publish(store, "v1", items)
    t0 = now_ms() - 10_000
    evs = [event("u1", "i1", "view", ts=t0, category="toys"), event("u1", "i1", "click", ts=t0 + 1),
           event("u1", "i2", "add_to_cart", ts=t0 + 2, category="toys"), event("u2", "i2", "add_to_cart", ts=t0 + 3),
           event("u1", "i2", "purchase", ts=t0 + 4)]
    records = Feed(s).records(evs)
    assert [r.topic for r in records] == [s.topic_clicks] * 4 + [s.topic_purchases]
    r = BatchProcessor(s, store).process(records)
    assert r.applied == 5
    hist = read_histories(store, ["u1", "u2"])
    assert [(i.item, i.weight, i.type) for i in reversed(hist["u1"])] == [
        ("i1", 0.5, "view"), ("i1", 1.0, "click"), ("i2", 2.5, "add_to_cart"), ("i2", 5.0, "purchase")]
    assert [(i.item, i.weight, i.type) for i in hist["u2"]] == [("i2", 2.5, "add_to_cart")]
    assert dict(top_popular(store)) == {"i1": 1.5, "i2": 10.0}
    assert dict(top_popular(store, category="toys")) == {"i1": 0.5, "i2": 2.5}
    for u, vec in expected_vectors(store, s, ["u1", "u2"]).items():
        np.testing.assert_allclose(stored_vector(store, "v1", u), vec, rtol=1e-4, atol=1e-5)


def test_redis_outage_is_retried_not_skipped(wsettings: Settings, store: RedisStore) -> None:
    feed = Feed(wsettings)
    down = RedisStore(wsettings, url="redis://127.0.0.1:1/0")  # nothing listens there
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            proc.store = store  # Redis is back

    proc = BatchProcessor(wsettings, down, sleep=sleep)
    r = proc.process(feed.records([event("u1", "i1")]))
    assert r.applied == 1 and r.attempts == 4 and waits == [0.1, 0.2, 0.4]
    assert event_counts(store, ["u1"]) == {"u1": 1}


def test_store_batch_helpers_match_single_ones(wsettings: Settings, store: RedisStore) -> None:
    other = RedisStore(wsettings, prefix=wsettings.redis_prefix + "-single")
    try:
        ts = now_ms()
        counts = {(ts, "i1", "toys"): 1.0, (ts, "i2", None): 5.0, (ts + 3_600_000, "i1", "toys"): 2.5,
                  (ts + 1, "i1", "books"): 3.0}
        hist = {"u1": [Interaction("i1", 1.0, ts, "click"), Interaction("i2", 5.0, ts + 1, "purchase")],
                "u2": [Interaction("i3", 1.0, ts, "click")] * 4}
        for _ in range(2):
            pipe = other.client.pipeline()
            for (t, item, cat), w in counts.items():
                add_counts(pipe, other, t, {(item, cat): w})
            for u, lst in hist.items():
                append_history(pipe, other, u, lst, 3)
                pipe.hincrby(other.keys.user_events(other.keys.partition(u)), u, len(lst))
            pipe.execute()
            pipe = store.client.pipeline()
            add_counts_many(pipe, store, counts)
            for p, users in store.keys.by_partition(hist).items():
                append_histories(pipe, store, {u: hist[u] for u in users}, 3, p)
            pipe.execute()

        def dump(s: RedisStore) -> dict[str, object]:
            out: dict[str, object] = {}
            for key in s.client.scan_iter(f"{s.keys.prefix}:*"):
                name = key.decode().split(":", 1)[1]
                kind = s.client.type(key).decode()
                if kind == "zset":
                    out[name] = (sorted(s.client.zrange(key, 0, -1, withscores=True)), s.client.ttl(key) > 0)
                elif kind == "list":
                    out[name] = s.client.lrange(key, 0, -1)
                elif kind == "hash":
                    out[name] = s.client.hgetall(key)
            return out

        assert dump(store) == dump(other)
    finally:
        keys = list(other.client.scan_iter(f"{other.keys.prefix}:*"))
        if keys:
            other.client.delete(*keys)
        other.close()


def test_processor_rejects_nothing_silently(wsettings: Settings, store: RedisStore) -> None:
    """Invalid records become dead letters with reasons; the valid ones around them are applied."""
    feed, letters = Feed(wsettings), []
    proc = BatchProcessor(wsettings, store, dead_letters=letters.extend)
    good = feed.records([event("u1", "i1"), event("u2", "i2")])
    bad = [Record(wsettings.topic_clicks, 0, 100 + n, b"k", raw, 0) for n, raw in
           enumerate([b"{bad", b"\xc3\x28", b"[1]", b"", b'{"event_id": "x"}'])]
    r = proc.process([good[0], *bad, good[1]])
    assert r.applied == 2
    assert r.dead_letters == {"bad_json": 2, "not_object": 1, "empty": 1, "invalid_field": 1}
    assert [d.record.value for d in letters] == [b.value for b in bad]
    assert proc.process([*bad]).redelivered == len(bad)  # not dead-lettered twice
    assert len(letters) == len(bad)


def test_new_item_interactions_keep_the_newest_cap_with_their_count_and_expiry(wsettings: Settings,
                                                                             store: RedisStore) -> None:
    publish(store, "v1", [f"i{i}" for i in range(10)])
    feed, proc = Feed(wsettings), BatchProcessor(wsettings, store)
    cap = wsettings.history_cap
    users = [f"u{k}" for k in range(cap + 20)]
    # two batches, two new items: one past the cap, one with a single interaction
    proc.process(feed.records([event(u, "new-a") for u in users[:30]] + [event("solo", "new-b", "purchase")]))
    proc.process(feed.records([event(u, "new-a") for u in users[30:]]))
    count_key = store.keys.model("v1", "pending_n")
    assert {k.decode(): int(v) for k, v in store.client.hgetall(count_key).items()} == {"new-a": cap + 20,
                                                                                        "new-b": 1}
    entries = [x.decode().split("\x1f")[0] for x in store.client.lrange(store.keys.pending("v1", "new-a"), 0, -1)]
    # the newest cap: all of the second batch and the last of the first (events of users in different partitions
    # have no order in Kafka; on a Redis Cluster each partition's are applied on their own)
    assert len(entries) == len(set(entries)) == cap and set(users[30:]) <= set(entries) <= set(users)
    assert store.client.lrange(store.keys.pending("v1", "new-b"), 0, -1) == [
        f"solo\x1f{wsettings.purchase_weight:.6g}".encode()]
    for key in (count_key, store.keys.pending("v1", "new-a"), store.keys.pending("v1", "new-b")):
        assert 0 < store.client.ttl(key) <= 7 * 86_400


def test_an_event_outside_its_users_murmur2_partition_is_a_dead_letter(wsettings: Settings,
                                                                        store: RedisStore) -> None:
    """A user's state lives under the keys of the partition murmur2 gives it (where the API reads it): an event
    produced elsewhere (another partitioner, an explicit partition) is refused with the reason, not lost."""
    feed, letters = Feed(wsettings), []
    proc = BatchProcessor(wsettings, store, dead_letters=letters.extend)
    good = feed.records([event("u1", "i1"), event("u2", "i2")])
    stray = feed.records([event("u3", "i3")])[0]
    wrong = (partition_for("u3", wsettings.partitions) + 1) % wsettings.partitions
    misplaced = Record(stray.topic, wrong, 500, stray.key, stray.value, stray.timestamp_ms)
    r = proc.process([good[0], misplaced, good[1]])
    assert (r.applied, r.dead_letters) == (2, {"wrong_partition": 1})
    assert [d.record for d in letters] == [misplaced]
    assert f"partition {partition_for('u3', wsettings.partitions)} of {wsettings.partitions}" in letters[0].detail
    assert event_counts(store, ["u1", "u2", "u3"]) == {"u1": 1, "u2": 1, "u3": 0}
