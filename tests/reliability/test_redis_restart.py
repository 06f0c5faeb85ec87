"""Redis faults on a private stack (AOF on).

1. Restart: SIGKILL Redis under load and start it again; the worker and the API recover by themselves,
   reads answer 503 (never 500) while it is away, and every event is applied exactly once.
2. Data loss: FLUSHALL, then ``streamrec rebuild``: the model comes back (refit from the batch snapshot
   and Kafka), every user's history, counts, trending, catalogue and applied offsets are as before, every
   vector is the fold-in of the user's history; the API serves the rebuilt model by itself, and a worker
   restarted from offset 0 skips everything already applied: exactly once across the rebuild.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_redis_restart.py -v``
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient

from batch.refit import run_refit
from online_api.server import ApiProcess
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore, as_str
from streamrec.store.catalog import get_item
from streamrec.store.models import current_version, load_model
from streamrec.store.trending import top_trending
from streamrec.store.users import read_histories
from tests.helpers.processes import Worker, applied_offsets, run_cli, wait_until
from tests.reliability.common import (
    consistent,
    count_5xx,
    exactly_once,
    strip_ids,
    user_counts,
    vector_errors,
    write_spec,
)
from tests.reliability.load import Loader
from tests.reliability.procs import PrivateStack, RssSampler, end_scenario, metric_sum, readyz, served_version
from tests.reliability.record import record

KEY = "redis-restart-key"
USERS = 3_000
ITEMS = 1_500
SEED_EVENTS = 20_000
RATE = 1_000
DURATION_S = 50.0
DOWN_AFTER_S = 15.0
DOWN_FOR_S = 8.0
READ_RPS = 100


def add(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    out = dict(total)
    for k, v in more.items():
        out[k] = out.get(k, 0) + v
    return out


def state(s: Settings, store: RedisStore, users: list[str], at_ms: int) -> dict[str, Any]:
    """What a user of the system relies on, read straight from Redis."""
    return {
        "histories": {u: [(i.item, i.weight, i.ts_ms, i.type) for i in h]
                      for u, h in read_histories(store, users).items()},
        "counts": user_counts(store),
        "offsets": applied_offsets(s, store),
        "popular": {as_str(m): sc for m, sc in  # type: ignore[str-unpack]
                    store.client.zrange(store.keys.popular(), 0, -1, withscores=True)},
        "trending": top_trending(store, "1h", k=50, now_ms=at_ms),
    }


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_redis_restart_then_flushall_and_rebuild(
        private_stack: PrivateStack, on_private: Callable[..., Settings], tmp_path: Path) -> None:
    s = on_private(api_keys=KEY, als_factors=16, als_iterations=5, history_cap=50, worker_session_timeout_s=6.0,
                   worker_batch_within_s=0.1)
    store = RedisStore(s)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    workers: list[Worker] = []
    loaders: list[Loader] = []
    try:
        # --- phase 0: history in Kafka, a refit (snapshot on disk), a catalogue -------------------------
        seed = Loader("events", s, tmp_path, "seed-events", "--rate", "0", "--count", str(SEED_EVENTS),
                      "--users", str(USERS), "--items", str(ITEMS), "--seed", "21")
        loaders.append(seed)
        produced = seed.wait(180)["per_user"]
        refit = run_refit(s)
        v1 = refit["version"]
        model = load_model(store, v1)
        assert model is not None
        known_items = model.item_ids
        api.start()
        api.wait_for("/readyz")
        catalog: list[dict[str, Any]] = [
            {"item_id": f"i{i}", "category": f"c{i % 7}", "available": i % 50 != 0, "brand": f"b{i % 3}"}
            for i in range(0, ITEMS, 10)]
        with httpx.Client(base_url=api.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            for row in catalog:
                body = {"category": row["category"], "available": row["available"],
                        "attributes": {"brand": row["brand"]}}
                assert http.put(f"/v1/items/{row['item_id']}", json=body).status_code == 200
        workers.append(Worker(s, tmp_path, "worker-1"))
        workers[0].metrics_url()

        # --- phase 1: SIGKILL Redis under load, start it again ---------------------------------------------
        spec = write_spec(tmp_path / "reads.json", [
            {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 8, "kind": "recommendations"},
            {"method": "GET", "path": "/v1/trending?window=1h", "weight": 1, "kind": "trending"},
            {"method": "GET", "path": "/v1/items/{item}/similar?k=10", "weight": 1, "kind": "similar"}],
            users=[f"u{i}" for i in range(USERS)], items=known_items)  # similar: 404 for items the model lacks
        events = Loader("events", s, tmp_path, "events-1", "--rate", str(RATE), "--duration", str(DURATION_S),
                        "--users", str(USERS), "--items", str(ITEMS), "--seed", "21")
        reads = Loader("http", s, tmp_path, "reads-1", "--url", api.url, "--spec", str(spec), "--rate",
                       str(READ_RPS), "--duration", str(DURATION_S + 5), "--connections", "4")
        loaders += [events, reads]
        rss = RssSampler({"api": api.pid, "worker": workers[0].pid}, every_s=5.0).start()
        time.sleep(DOWN_AFTER_S)
        kill_s = private_stack.stop("redis", signal.SIGKILL)
        down_at = time.monotonic()
        time.sleep(DOWN_FOR_S)
        private_stack.start("redis")
        up_at = time.monotonic()
        ready_s = wait_until(lambda: readyz(api.url) is not None, 120,
                             "the API ready again")
        before = sum(applied_offsets(s, store).values())
        worker_s = workers[0].wait_until(lambda: sum(applied_offsets(s, store).values()) > before, 120,
                                         "the worker applying")
        phase1 = events.wait(DURATION_S + 120)
        read1 = reads.wait(DURATION_S + 120)
        produced = add(produced, phase1["per_user"])
        drain_s = workers[0].wait_applied(store, 240)
        restart = exactly_once(produced, user_counts(store))
        restart_fig = {"events_sent": SEED_EVENTS + phase1["sent"], **restart, "reads": strip_ids(read1),
                       "redis_killed_s": round(kill_s, 1), "redis_down_s": round(up_at - down_at, 1),
                       "api_ready_after_redis_up_s": round(ready_s, 1),
                       "worker_applying_after_redis_up_s": round(worker_s + ready_s, 1),
                       "worker_drain_after_load_s": round(drain_s, 1), "worker_restarted": False,
                       "worker_infrastructure_retries": metric_sum(
                           workers[0].metrics(), "streamrec_worker_retries_total", 'kind="infrastructure"')}
        assert restart["lost"] == 0 and restart["doubled"] == 0, restart
        assert workers[0].alive(), workers[0].tail()
        assert not read1["errors"], read1["errors"]
        assert set(read1["status"]) <= {"200", "503"}, read1["status"]
        assert read1["status"].get("503", 0) > 0, "Redis was never missed"

        # --- phase 2: FLUSHALL, rebuild --------------------------------------------------------------------
        workers[0].stop()
        at = now_ms()
        users = sorted(produced)
        before_state = state(s, store, users, at)
        catalogue_before = {row["item_id"]: get_item(store, row["item_id"]) for row in catalog}
        store.client.flushall()
        with httpx.Client(base_url=api.url, timeout=30) as http:  # the API without its data: no 500, no hang
            during = [http.get(f"/v1/users/u{i}/recommendations").status_code for i in range(20)]
        catalog_file = tmp_path / "catalog.jsonl"
        catalog_file.write_text("".join(json.dumps(row) + "\n" for row in catalog))
        started = time.monotonic()
        run = run_cli(s, "rebuild", "--catalog", str(catalog_file), timeout_s=900)
        rebuild_s = time.monotonic() - started
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        after_state = state(s, store, users, at)
        v2 = current_version(store)
        vectors = vector_errors(s, store, users, sample=500)
        diffs = {
            "histories": sum(not consistent(before_state["histories"][u], after_state["histories"][u],
                                            before_state["counts"].get(u, 0), s.history_cap) for u in users),
            "counts": sum(before_state["counts"].get(u) != after_state["counts"].get(u) for u in users),
            "offsets": before_state["offsets"] != after_state["offsets"],
            "popular": sum(not close(sc, after_state["popular"].get(m, -1.0))
                           for m, sc in before_state["popular"].items())
            + len(after_state["popular"].keys() - before_state["popular"].keys()),
            "trending": [m for m, _ in before_state["trending"]] != [m for m, _ in after_state["trending"]]
            or not all(close(a[1], b[1])
                       for a, b in zip(before_state["trending"], after_state["trending"], strict=True)),
            "catalogue": sum(get_item(store, i) != e for i, e in catalogue_before.items()),
        }
        identical = sum(before_state["histories"][u] == after_state["histories"][u] for u in users)
        api_ready = wait_until(lambda: served_version(api.url) == v2,
                               60, "the API serving the rebuilt model")
        probe = httpx.get(f"{api.url}/v1/users/{users[0]}/recommendations", timeout=10).json()

        # --- phase 3: a worker restarted from offset 0 skips everything applied, then continues -------------
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
        admin.delete_consumer_groups([s.consumer_group], request_timeout=30)[s.consumer_group].result(30)
        workers.append(Worker(s, tmp_path, "worker-2"))
        events3 = Loader("events", s, tmp_path, "events-3", "--rate", str(RATE), "--duration", "15",
                         "--users", str(USERS), "--items", str(ITEMS), "--seed", "21")
        loaders.append(events3)
        phase3 = events3.wait(180)
        produced = add(produced, phase3["per_user"])
        workers[1].wait_applied(store, 240)
        rss.pids["worker-2"] = workers[1].pid
        rss.stop()
        after = exactly_once(produced, user_counts(store))
        skipped = metric_sum(workers[1].metrics(), "streamrec_worker_skipped_total", 'reason="redelivered"')
        record("redis_restart", {"command": "pytest -m reliability tests/reliability/test_redis_restart.py",
                                 **restart_fig, "rss": rss.start_end()})
        record("redis_flushall_rebuild", {
            "command": "pytest -m reliability tests/reliability/test_redis_restart.py",
            "rebuild_command": "streamrec rebuild --catalog catalog.jsonl", "rebuild_s": round(rebuild_s, 1),
            "rebuild_summary": summary, "model_before": v1, "model_after": v2, "differences": diffs,
            "users_compared": len(users), "histories_identical": identical,
            "histories_same_up_to_click_purchase_interleaving": len(users) - identical, "vectors": vectors,
            "api_during_flush_status": sorted(set(during)),
            "api_serving_rebuilt_model_after_s": round(api_ready, 1), "api_personalized": probe.get("personalized"),
            "after_rebuild": {**after, "events_sent_after": phase3["sent"], "redelivered_skipped": skipped}})
        assert summary["replay"]["applied"] == sum(before_state["counts"].values())
        assert v2 is not None and v2 != v1
        assert not any(diffs.values()), diffs
        assert vectors["missing"] == 0 and vectors["max_rel_error"] < 1e-3, vectors
        assert 500 not in during and all(code in (200, 503) for code in during), during
        assert probe.get("personalized") is True, probe
        assert after["lost"] == 0 and after["doubled"] == 0, after
        assert skipped == sum(before_state["counts"].values())  # everything before the flush, skipped once
        assert count_5xx(read1) == read1["status"].get("503", 0)
    finally:
        end_scenario(api, store, loaders, workers)
        if not private_stack.stack._redis_ready():
            private_stack.start("redis")
