"""Kafka restart under load, on a private stack: the collector answers 503 (never 500) while Kafka is down
and 202 again by itself once it is back; no event answered 202 is lost; the worker resumes by itself and
applies every event in Kafka exactly once; reads keep answering 200.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_kafka_restart.py -v``
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from online_api.server import ApiProcess
from ops.bench_stream import publish_model
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.helpers.processes import Worker
from tests.reliability.common import exactly_once, kafka_events, per_user, strip_ids, user_counts, write_spec
from tests.reliability.load import Loader
from tests.reliability.procs import PrivateStack, RssSampler, end_scenario
from tests.reliability.record import record

KEY = "kafka-restart-key"
ITEMS = 2_000
USERS = 1_000
RPS = 200
DURATION_S = 70.0
DOWN_AFTER_S = 15.0
DOWN_FOR_S = 15.0


def one_event() -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "user_id": "probe", "item_id": "i1", "type": "click", "ts": now_ms()}


def test_kafka_restart_under_load_loses_nothing_and_recovers_by_itself(
        private_stack: PrivateStack, on_private: Callable[..., Settings], tmp_path: Path) -> None:
    s = on_private(api_keys=KEY, api_produce_timeout_s=3.0, als_factors=16, history_cap=50,
                   worker_session_timeout_s=6.0)
    publish_model(s, ITEMS, s.als_factors, seed=4)
    store = RedisStore(s)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    worker: Worker | None = None
    load: Loader | None = None
    try:
        api.start()
        api.wait_for("/readyz")
        worker = Worker(s, tmp_path, "worker")
        worker.metrics_url()  # started (RSS is sampled from here)
        spec = write_spec(tmp_path / "mix.json", [
            {"method": "POST", "path": "/v1/events:batch", "events": 10, "weight": 3, "kind": "events_batch"},
            {"method": "POST", "path": "/v1/events", "events": 1, "weight": 3, "kind": "event"},
            {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 4, "kind": "recommendations"}],
            users=[f"u{i}" for i in range(USERS)], items=[f"i{i}" for i in range(ITEMS)], key=KEY)
        load = Loader("http", s, tmp_path, "load", "--url", api.url, "--spec", str(spec), "--rate", str(RPS),
                      "--duration", str(DURATION_S), "--connections", "16", "--timeout", "30")
        rss = RssSampler({"api": api.pid, "worker": worker.pid}, every_s=5.0).start()
        time.sleep(DOWN_AFTER_S)
        stop_s = private_stack.stop("kafka", signal.SIGTERM)
        down_at = time.monotonic()
        time.sleep(DOWN_FOR_S)
        start_s = private_stack.start("kafka")
        up_at = time.monotonic()
        # the collector recovers by itself: probe until a posted event is accepted again
        first_202 = None
        with httpx.Client(base_url=api.url, headers={"X-API-Key": KEY}, timeout=30) as http:
            while time.monotonic() - up_at < 120:
                if http.post("/v1/events", json=one_event()).status_code == 202:
                    first_202 = time.monotonic() - up_at
                    break
                time.sleep(0.5)
        result = load.wait(DURATION_S + 180)
        drain_s = worker.wait_applied(store, 240)
        rss.stop()

        in_kafka = kafka_events(s)
        accepted, unavailable = set(result["accepted_ids"]), set(result["unavailable_ids"])
        lost_202 = accepted - in_kafka.keys()
        counts = exactly_once(per_user(in_kafka), user_counts(store))
        figures = {
            "command": "pytest -m reliability tests/reliability/test_kafka_restart.py",
            "requests": strip_ids(result), "events_answered_202": len(accepted),
            "events_answered_503": len(unavailable), "events_503_found_in_kafka": len(unavailable & in_kafka.keys()),
            "events_in_kafka": len(in_kafka), "lost_202": len(lost_202), **counts,
            "kafka_stop_s": round(stop_s, 1), "kafka_down_s": round(up_at - down_at, 1),
            "kafka_start_s": round(start_s, 1),
            "collector_first_202_after_restart_s": None if first_202 is None else round(first_202, 1),
            "worker_restarted": False, "worker_drain_after_load_s": round(drain_s, 1), "rss": rss.start_end(),
        }
        record("kafka_restart", figures)
        by_kind = result["status_by_kind"]
        assert not lost_202, f"{len(lost_202)} events answered 202 are not in Kafka"
        assert counts["lost"] == 0 and counts["doubled"] == 0, counts
        for kind in ("events_batch", "event"):
            assert set(by_kind[kind]) <= {"202", "503"}, by_kind
        assert sum(int(by_kind[k].get("503", 0)) for k in ("events_batch", "event")) > 0, "Kafka was never missed"
        assert set(by_kind["recommendations"]) == {"200"}, by_kind
        assert not result["errors"], result["errors"]
        assert first_202 is not None, "the collector did not accept events again after Kafka came back"
        assert worker.alive(), worker.tail()
    finally:
        end_scenario(api, store, [load], [worker])
        if not private_stack.stack._kafka_ready():
            private_stack.start("kafka")
