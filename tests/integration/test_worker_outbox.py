"""The shared keys (trending, new items, co-visitation) end up the same whether a batch's effects are queued in
its own transaction (one Redis) or go through the partition's outbox (Redis Cluster), and an outbox entry is
applied once per kind however often it is drained, whatever was applied before a crash."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stream_processors import new_items as ni
from stream_processors.shared import (
    Entry,
    SharedEffects,
    _apply_kind,
    drain,
    effects_of,
    queue_effects,
    queue_outbox,
)
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.covisitation import neighbours
from streamrec.store.trending import top_popular, top_trending

COVIS = (3_600.0, 20)
AT = now_ms() + 60_000
CAP = 50


def effects(now: int, seed: int) -> SharedEffects:
    rng = np.random.default_rng(seed)
    minute = now - now % 60_000
    counts = {(minute, f"i{rng.integers(30)}", "toys" if rng.random() < 0.5 else None): float(rng.integers(1, 4))
              for _ in range(40)}
    pending = {"new-a": [f"u{rng.integers(99)}\x1f1" for _ in range(3)]}
    folded = {"new-a": rng.standard_normal(8).astype(np.float32)}
    covis = {f"i{k}": ([f"i{k + 1}", f"i{k + 2}"], rng.random(2)) for k in range(5)}
    return effects_of(counts, "v1", pending, folded, now, covis)


def state(store: RedisStore) -> dict[str, object]:
    """Everything a reader sees of the shared keys; the pending entries as a multiset (entries of different
    partitions have no order) and co-visitation scores to 12 digits (sums in another order)."""
    c = store.client
    at = AT  # the same instant for every state compared
    covis = {item: [(n, round(score, 12)) for n, score in row]
             for item, row in neighbours(store, [f"i{k}" for k in range(7)], at, COVIS[0], COVIS[1]).items()}
    return {"trending": top_trending(store, "1h", k=50), "toys": top_trending(store, "1h", category="toys", k=50),
            "popular": top_popular(store, k=50),
            "pending": sorted(c.lrange(ni.pending_list_key(store, "v1", "new-a"), 0, -1)),
            "pending_n": c.hgetall(ni.pending_count_key(store, "v1")),
            "new_items": c.hgetall(store.keys.model("v1", "new_items")), "covis": covis}


def test_outbox_and_direct_writes_leave_the_same_shared_state_and_entries_apply_once(
        make_settings: Callable[..., Settings]) -> None:
    now = now_ms()
    batches = [effects(now + seed, seed) for seed in range(3)]  # three batches, a millisecond apart
    direct, boxed = RedisStore(make_settings()), RedisStore(make_settings())
    for e in batches:  # one Redis: in the batch's transaction
        pipe = direct.client.pipeline(transaction=False)
        e.queue(pipe, direct, COVIS, CAP)
        pipe.execute()
    # a cluster: through the outboxes of partitions 2 (entries 1 and 2) and 5 (entry 1), drained together
    placed = [(2, 1, batches[0]), (5, 1, batches[1]), (2, 2, batches[2])]
    for p, seq, e in placed:
        pipe = boxed.client.pipeline(transaction=False)
        queue_outbox(pipe, boxed, p, seq, e)
        pipe.execute()
    # a drain that crashed after applying partition 2's first entry to the trending keys only
    _apply_kind(boxed, {2: [boxed_entry(boxed, 2, 0)]}, "t", COVIS, CAP)
    assert drain(boxed, [2, 5], COVIS, CAP) == 3
    assert boxed.client.llen(boxed.keys.outbox(2)) == boxed.client.llen(boxed.keys.outbox(5)) == 0
    assert state(boxed) == state(direct)
    # the same entries drained again (a second worker, a redelivered batch re-queuing them): nothing doubles
    for p, seq, e in placed:
        pipe = boxed.client.pipeline(transaction=False)
        queue_outbox(pipe, boxed, p, seq, e)
        pipe.execute()
    assert drain(boxed, [2, 5], COVIS, CAP) == 3 and state(boxed) == state(direct)
    assert {(k, p): boxed.client.hget(boxed.keys.applied(k), str(p)) for k in "tnc" for p in (2, 5)} == {
        (k, p): b"2" if p == 2 else b"1" for k in "tnc" for p in (2, 5)}
    direct.close()
    boxed.close()


def test_queue_effects_writes_only_the_kinds_asked(make_settings: Callable[..., Settings]) -> None:
    store = RedisStore(make_settings())
    e = effects(now_ms(), 7)
    pipe = store.client.pipeline(transaction=False)
    queue_effects(pipe, store, {(c[0], c[1], c[2]): c[3] for c in e.counts}, e.version, e.pending, {}, e.covis_now,
                  {}, COVIS, CAP, kinds=("n",))
    pipe.execute()
    got = state(store)
    assert got["trending"] == [] and got["popular"] == [] and got["pending"]
    store.close()


def boxed_entry(store: RedisStore, p: int, n: int) -> Entry:
    from stream_processors.shared import _DECODER

    return _DECODER.decode(store.client.lindex(store.keys.outbox(p), n))
