"""The failure policy of the worker's core on real Redis: a record that cannot be applied is isolated.

A batch that fails twice for a reason other than the infrastructure is bisected down to the records that
fail; those become ``apply_failed`` dead letters and everything else is applied exactly once, in order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from stream_processors.decode import DeadLetter
from stream_processors.processor import BatchProcessor
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import event_counts, read_histories
from tests.helpers.processes import applied_offsets
from tests.integration.test_worker_core import Feed, event, publish


def test_unappliable_events_are_dead_lettered_and_the_rest_applied_once(
        make_settings: Callable[..., Settings]) -> None:
    s = make_settings(als_factors=8, history_cap=50)
    store = RedisStore(s)
    publish(store, "v1", [f"i{n}" for n in range(30)])
    store.client.rpush(store.keys.history("bad"), b"corrupt")  # state no code path can read
    store.client.hset(store.keys.user_events(store.keys.partition("bad")), "bad", 1)
    letters: list[DeadLetter] = []

    def sink(batch: Sequence[DeadLetter]) -> None:
        letters.extend(batch)

    proc = BatchProcessor(s, store, dead_letters=sink, sleep=lambda _s: None)
    t0 = now_ms() - 10_000
    events = [event(f"u{n % 40}", f"i{n % 30}", "purchase" if n % 7 == 0 else "click", ts=t0 + n)
              for n in range(400)]
    events[150:150] = [event("bad", "i1", ts=t0 + 150)]
    events[333:333] = [event("bad", "i2", "purchase", ts=t0 + 333)]
    feed = Feed(s)
    records = feed.records(events)

    result = proc.process(records)

    assert result.applied == 400 and result.dead_letters == {"apply_failed": 2}
    assert sorted(d.record.offset for d in letters) == sorted(r.offset for r in records if r.key == b"bad")
    assert {d.reason for d in letters} == {"apply_failed"} and {d.exception for d in letters} == {"ValueError"}
    users = sorted({e.user_id for e in events} - {"bad"})
    expected = Counter(e.user_id for e in events if e.user_id != "bad")
    assert event_counts(store, users) == dict(expected)
    stored = read_histories(store, users)
    for u in users:  # every good event once
        assert sorted((i.ts_ms, i.item) for i in stored[u]) == [(e.ts, e.item_id) for e in events if e.user_id == u]
    ends = {f"{r.topic}:{r.partition}": r.offset for r in records}
    assert applied_offsets(s, store) == ends
    assert event_counts(store, ["bad"]) == {"bad": 1}

    again = proc.process(records)  # Kafka redelivers the batch: nothing is applied or dead-lettered twice
    assert again.applied == 0 and again.redelivered == len(records) and len(letters) == 2
    store.close()
