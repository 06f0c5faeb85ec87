"""Poison events on the real worker, Kafka and Redis: no single record can stop a partition.

1. The record that once stalled every partition for good (a lone UTF-16 surrogate in ``context.category``,
   an item the catalogue does not know) and an event that passes validation but cannot be applied (its
   user's stored history is corrupt), followed by 200 good events: every good event is applied exactly
   once within seconds, the two poison records are in the dead-letter topic with their reasons
   (``invalid_field``; ``apply_failed`` with the exception in its headers), and counted.
2. SIGTERM while the worker is retrying a batch (Redis unreachable) stops it within the grace period.

Quick enough for ``make test``; ``make reliability`` runs it too and reports its figures.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench_stream import publish_model
from stream_processors import dead_letters as dl
from streamrec.events import now_ms
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import event_counts, read_histories
from tests.helpers.dead_letters import read_dead_letters
from tests.helpers.processes import Worker, wait_until
from tests.reliability.procs import metric_sum
from tests.reliability.record import record

GOOD_USERS = 50
GOOD_EVENTS = 200
ITEMS = 100
# The record, byte for byte: JSON's \ud83d escape decodes to a lone surrogate.
SURROGATE = ('{"event_id":"%s","user_id":"u","item_id":"new-item","type":"click","ts":%d,'
             '"context":{"category":"\\ud83d"}}')


def good_event(n: int) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": f"g{n % GOOD_USERS}", "item_id": f"i{n % ITEMS}",
            "type": "click", "ts": now_ms()}


def test_poison_events_cost_seconds_never_the_partition(make_settings: Callable[..., Settings],
                                                         tmp_path: Path) -> None:
    s = make_settings(als_factors=8, worker_batch_within_s=0.1, worker_session_timeout_s=6.0)
    publish_model(s, ITEMS, s.als_factors, seed=3)
    store = RedisStore(s)
    # Stored state no code path can read: this user's next event passes validation but cannot be applied.
    store.client.rpush(store.keys.history("corrupt"), b"not an interaction")
    store.client.hset(store.keys.user_events(store.keys.partition("corrupt")), "corrupt", 1)
    worker = Worker(s, tmp_path, "worker")
    try:
        worker.metrics_url(60)  # started and consuming
        producer = EventProducer(s)
        # Each poison record goes to the partition of the good users it shares, ahead of their events.
        producer.send_raw(s.topic_clicks, b"u", (SURROGATE % (uuid.uuid4(), now_ms())).encode())
        unappliable = {**good_event(0), "user_id": "corrupt"}
        producer.send_raw(s.topic_clicks, b"corrupt", json.dumps(unappliable).encode())
        events = [good_event(n) for n in range(GOOD_EVENTS)]
        for e in events:
            producer.send_raw(s.topic_clicks, e["user_id"].encode(), json.dumps(e).encode())
        assert producer.flush(30) == 0
        sent = time.monotonic()
        expected = {f"g{u}": sum(1 for e in events if e["user_id"] == f"g{u}") for u in range(GOOD_USERS)}
        users = sorted(expected)
        worker.wait_until(lambda: event_counts(store, users) == expected, 60, "the 200 good events to be applied")
        applied_s = time.monotonic() - sent
        letters = read_dead_letters(s, 2)
        metrics = worker.metrics()
        histories = read_histories(store, users)
        record("poison_events", {
            "command": "pytest tests/integration/test_poison_events.py",
            "poison_records": 2, "good_events": GOOD_EVENTS,
            "seconds_from_poison_to_all_good_applied": round(applied_s, 2),
            "dead_letters": {k: v.get(dl.REASON) for k, v in letters.items()},
            "apply_failed_metric": metric_sum(metrics, "streamrec_worker_dead_letters_total",
                                              'reason="apply_failed"'),
        })
        assert applied_s < 20, f"a poison record held the good events up for {applied_s:.1f}s"
        assert {u: len(h) for u, h in histories.items()} == expected  # each exactly once
        assert letters["u"][dl.REASON] == "invalid_field" and "surrogate" in letters["u"][dl.DETAIL]
        assert letters["corrupt"][dl.REASON] == "apply_failed"
        assert letters["corrupt"][dl.EXCEPTION] == "ValueError"
        assert letters["corrupt"][dl.SOURCE].startswith(f"{s.topic_clicks}:")
        assert metric_sum(metrics, "streamrec_worker_dead_letters_total", 'reason="apply_failed"') == 1
        assert metric_sum(metrics, "streamrec_worker_dead_letters_total", 'reason="invalid_field"') == 1
        assert event_counts(store, ["corrupt"])["corrupt"] == 1  # the poison event changed nothing
        assert worker.alive()
    finally:
        worker.kill()
        store.close()


def test_sigterm_while_retrying_stops_within_the_grace_period(make_settings: Callable[..., Settings],
                                                               tmp_path: Path) -> None:
    grace = 4.0
    s = make_settings(worker_shutdown_grace_s=grace, worker_batch_within_s=0.1)
    producer = EventProducer(s)
    for n in range(50):
        e = good_event(n)
        producer.send_raw(s.topic_clicks, e["user_id"].encode(), json.dumps(e).encode())
    assert producer.flush(30) == 0
    away = s.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})  # nothing listens there
    worker = Worker(away, tmp_path, "worker")
    try:
        worker.wait_until(lambda: "retrying in" in worker.log_path.read_text(errors="replace"), 60,
                          "the worker to retry a batch while Redis is away")
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        wait_until(lambda: not worker.alive(), grace + 5, "the worker to stop after SIGTERM", poll_s=0.1)
        stopped_s = time.monotonic() - asked
        record("shutdown_while_retrying", {"grace_s": grace, "seconds_to_exit": round(stopped_s, 2)})
        assert stopped_s <= grace + 1.0, worker.tail()
    finally:
        worker.kill()
