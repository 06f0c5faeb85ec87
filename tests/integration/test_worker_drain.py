"""On a Redis Cluster the worker applies the outboxes to the shared keys in a background thread
(stream_processors/drainer.py) while it computes the next batch. What readers see once the drains settle must
be what the in-line path leaves: same trending, same new-item counts and entries, same folded new items,
empty outboxes. On one Redis there is nothing to drain and both paths are the same transaction."""

from __future__ import annotations

from collections.abc import Callable

from stream_processors import new_items as ni
from stream_processors.processor import BatchProcessor
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.trending import top_popular, top_trending
from tests.integration.test_worker_core import FACTORS, Feed, event, publish


def _shared(store: RedisStore) -> dict[str, object]:
    c = store.client
    return {"trending": top_trending(store, "1h", k=100), "popular": top_popular(store, k=100),
            "pending_n": c.hgetall(ni.pending_count_key(store, "v1")),
            "pending": {it: sorted(c.lrange(ni.pending_list_key(store, "v1", it), 0, -1)) for it in ("new-a", "new-b")},
            "new_items": sorted(c.hkeys(store.keys.model("v1", "new_items"))),
            "outboxes": sum(c.llen(store.keys.outbox(p)) for p in range(store.keys.partitions))}


def test_background_drains_leave_what_in_line_drains_leave(make_settings: Callable[..., Settings]) -> None:
    results = []
    for settle in (True, False):
        s = make_settings(als_factors=FACTORS, new_item_min_interactions=3, history_cap=50)
        store = RedisStore(s)
        publish(store, "v1", [f"i{i}" for i in range(20)])
        feed, proc = Feed(s), BatchProcessor(s, store)
        users = [f"u{k}" for k in range(40)]
        batches = [[event(u, f"i{(k * 7 + b) % 20}") for k, u in enumerate(users)]
                   + [event(u, "new-a") for u in users[b * 2 : b * 2 + 2]]  # new-a crosses 3 in the 2nd batch
                   + ([event(users[0], "new-b", "purchase")] if b == 3 else []) for b in range(5)]
        for evs in batches:
            r = proc.process(feed.records(evs), settle=settle)
            assert r.applied == len(evs) and not r.dead_letters
        assert proc.settle_shared(timeout_s=30)
        got = _shared(store)
        assert got["outboxes"] == 0 and got["trending"] and b"new-a" in got["new_items"]
        assert {k.decode(): int(v) for k, v in got["pending_n"].items()} == {"new-a": 10, "new-b": 1}
        results.append(got)
        proc.close()
        store.close()
    assert results[0] == results[1]
