"""`streamrec rebuild` on real Kafka and Redis: after the test's Redis keys are lost, the model and every
user's state come back from the batch snapshot and the event topics, the rebuild refuses to run next to a
live worker or over existing state (unless --force), and a restarted worker continues exactly once.

(The full scenario -- FLUSHALL of a whole Redis under load -- is tests/reliability/test_redis_restart.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batch.refit import run_refit
from streamrec import simulate
from streamrec.kafka_io import EventProducer, end_offsets
from streamrec.settings import REPO_ROOT, Settings
from streamrec.store import RedisStore
from streamrec.store.models import current_version
from streamrec.store.users import read_histories
from tests.helpers.processes import Worker, applied_offsets, child_env, wait_applied, wait_until
from tests.reliability.common import consistent, exactly_once, user_counts, vector_errors


def produce(s: Settings, world: simulate.Storefront, n: int) -> Counter[str]:
    producer = EventProducer(s)
    sent: Counter[str] = Counter()
    events = world.events()
    for _ in range(n):
        e = next(events)
        producer.send(e)
        sent[e.user_id] += 1
    producer.send_raw(s.topic_clicks, b"poison", b"{not json")  # dead-lettered once, never again
    assert producer.flush(30) == 0
    return sent


def rebuild(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", "rebuild", *args], env=child_env(s),
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def wipe(s: Settings, store: RedisStore) -> None:
    keys = list(store.client.scan_iter(f"{s.redis_prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        store.client.delete(*keys[i : i + 500])


def test_rebuild_restores_model_and_user_state_and_the_worker_continues_exactly_once(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings(als_factors=8, als_iterations=3, history_cap=20, batch_snapshot_dir=tmp_path / "snap",
                      worker_metrics_port=0, worker_batch_within_s=0.1, worker_session_timeout_s=6.0)
    store = RedisStore(s)
    world = simulate.Storefront(simulate.SimConfig(seed=12, users=300, items=150, new_item_every=10**9))
    sent = produce(s, world, 3_000)
    run_refit(s, store)
    worker = Worker(s, tmp_path, "worker-1")
    try:
        wait_applied(s, store, worker.alive, 90, worker.tail)
        users = sorted(sent)
        before: dict[str, Any] = {"counts": user_counts(store), "offsets": applied_offsets(s, store),
                                  "hist": read_histories(store, users)}
        dead_before = sum(end_offsets(s, [s.topic_dead_letter]).values())
        wait_until(lambda: _members(s) > 0, 60, "the worker joining its group")
        refused = rebuild(s)  # a live worker: refuse
        assert refused.returncode == 1 and "stop every `streamrec worker`" in refused.stderr, refused.stderr
    finally:
        worker.stop()

    wipe(s, store)  # Redis lost everything of this deployment
    done = rebuild(s)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["refit"] and summary["model_version"] == current_version(store)
    assert summary["replay"]["applied"] == sum(sent.values()) and summary["replay"]["dead_letters"] == 1
    assert user_counts(store) == before["counts"] == dict(sent)
    assert applied_offsets(s, store) == before["offsets"]
    after_hist = read_histories(store, users)
    for u in users:
        old = [(i.item, i.weight, i.ts_ms, i.type) for i in before["hist"][u]]
        new = [(i.item, i.weight, i.ts_ms, i.type) for i in after_hist[u]]
        assert consistent(old, new, sent[u], s.history_cap), u
    vectors = vector_errors(s, store, users)
    assert vectors["missing"] == 0 and vectors["max_rel_error"] < 1e-3, vectors
    assert sum(end_offsets(s, [s.topic_dead_letter]).values()) == dead_before  # not dead-lettered twice

    again = rebuild(s)  # the state is there now: refuse without --force
    assert again.returncode == 1 and "--force" in again.stderr
    forced = rebuild(s, "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert user_counts(store) == dict(sent) and applied_offsets(s, store) == before["offsets"]

    more = produce(s, world, 500)
    worker = Worker(s, tmp_path, "worker-2")
    try:
        wait_applied(s, store, worker.alive, 90, worker.tail)
    finally:
        worker.stop()
    result = exactly_once(dict(sent + more), user_counts(store))
    assert result["lost"] == 0 and result["doubled"] == 0, result
    store.close()


def _members(s: Settings) -> int:
    from ops.rebuild import group_members

    return group_members(s)
