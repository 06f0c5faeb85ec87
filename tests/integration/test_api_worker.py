"""End to end through HTTP: events posted to the collector reach the worker and change recommendations."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from online_api.server import ApiProcess, free_port
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.helpers.processes import Started

KEY = "e2e-key-0123456789abcdef"


def click(user: str, item: str, kind: str = "click") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "type": kind, "ts": now_ms()}


def poll(fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = fetch()
        if done(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.25)


def test_events_posted_to_the_collector_change_that_users_recommendations(
        make_settings: Callable[..., Settings], procs: Started) -> None:
    settings = make_settings(api_keys=KEY, worker_web_port=free_port(), worker_batch_within_s=0.05)
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=500, users=30, factors=16, seed=21))
    worker = procs.worker(settings, log_level="warning")
    with ApiProcess(settings) as api, httpx.Client(base_url=api.url, headers={"X-API-Key": KEY}, timeout=15) as http:
        api.wait_for("/readyz")

        def recs(user: str) -> dict[str, Any]:
            return dict(http.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json())

        # A new user: the fallback first, personal recommendations once the worker folded the events in.
        newcomer = f"newcomer-{uuid.uuid4().hex[:6]}"
        before = recs(newcomer)
        assert before["personalized"] is False and before["vector_age_s"] is None
        clicked = [f"item-{i}" for i in (3, 17, 42, 99, 250)]
        events = [click(newcomer, item) for item in clicked] + [click(newcomer, clicked[0], "purchase")]
        resp = http.post("/v1/events:batch", json={"events": events})
        assert resp.status_code == 202, resp.text
        after = poll(lambda: recs(newcomer), lambda b: bool(b["personalized"]), 60)
        worker.assert_alive()
        assert after["personalized"] is True, after
        assert 0 <= after["vector_age_s"] < 60
        ids = [i["item_id"] for i in after["items"]]
        assert len(ids) == 10 and not set(ids) & set(clicked)  # what they clicked is not recommended back
        why = http.get(f"/v1/users/{newcomer}/recommendations/{ids[0]}/explain").json()
        assert {c["item_id"] for c in why["contributions"]} <= set(clicked)

        # A known user: their list changes after new events.
        user = users[4]
        first = recs(user)
        assert first["personalized"] is True
        for item in (f"item-{i}" for i in range(400, 420)):
            assert http.post("/v1/events", json=click(user, item)).status_code == 202
        changed = poll(lambda: recs(user), lambda b: b["items"] != first["items"], 60)
        assert changed["items"] != first["items"]
        assert changed["vector_age_s"] < first["vector_age_s"]
    store.close()
