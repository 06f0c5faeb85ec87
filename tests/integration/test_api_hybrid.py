"""The hybrid through HTTP on real Kafka and Redis: events posted to the collector, applied by a running
worker, make co-visitation neighbours appear in ``similar`` within seconds (an item new since the refit
included), answer anonymous session recommendations, and name ``covisitation``/``repeat`` sources."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from online_api.server import ApiProcess, free_port
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.helpers.polling import poll
from tests.helpers.processes import Started

KEY = "hybrid-key-0123456789abcdef"


def event(user: str, item: str, ts: int, kind: str = "click") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": item, "type": kind, "ts": ts}


def test_covisitation_reaches_similar_sessions_and_recommendations(
        make_settings: Callable[..., Settings], procs: Started) -> None:
    # repeats weigh twice the other sources (a grocery's setting): "buy again" leads when repeats are allowed
    # The new item is never folded in (it would then also score as "personal", and which source labels it would
    # depend on when the fold-in landed): what it gets here comes from co-visitation alone.
    settings = make_settings(api_keys=KEY, worker_web_port=free_port(), worker_batch_within_s=0.05,
                             rank_weight_repeat=2.0, worker_covisitation=True, new_item_min_interactions=1_000)
    store = RedisStore(settings)
    publish_synthetic(store, BenchConfig(items=300, users=10, factors=16, seed=5, covis_neighbours=0))
    worker = procs.worker(settings, log_level="warning")
    fresh = f"fresh-{uuid.uuid4().hex[:6]}"  # not in the model: new since the refit
    with ApiProcess(settings) as api, httpx.Client(base_url=api.url, headers={"X-API-Key": KEY}, timeout=15) as http:
        api.wait_for("/readyz")
        assert http.get(f"/v1/items/{fresh}/similar", params={"kind": "covisitation"}).json()["items"] == []
        assert http.get(f"/v1/items/{fresh}/similar").status_code == 404  # neither factors nor neighbours yet
        t0 = now_ms() - 60_000
        events = []
        for n in range(3):  # three visitors view item-5, then the new item
            events += [event(f"viewer-{n}", "item-5", t0 + 10_000 * n),
                       event(f"viewer-{n}", fresh, t0 + 10_000 * n + 2_000)]
        events += [event("regular", "item-7", t0 + 1_000 * n, "purchase") for n in range(3)]
        events += [event("browser", "item-5", t0 + 50_000)]
        resp = http.post("/v1/events:batch", json={"events": events})
        assert resp.status_code == 202, resp.text

        def similar(item: str, kind: str) -> list[str]:
            return [i["item_id"] for i in http.get(f"/v1/items/{item}/similar", params={"kind": kind}).json()["items"]]

        got, waited = poll(lambda: similar(fresh, "covisitation"), lambda ids: "item-5" in ids, 20)
        worker.assert_alive()
        assert got == ["item-5"] and waited < 10, (got, waited)
        assert similar("item-5", "covisitation")[0] == fresh
        assert similar(fresh, "blend")[0] == "item-5"
        assert fresh in similar("item-5", "blend")

        # An anonymous visitor who viewed item-5 gets its co-visitation neighbour.
        body = http.post("/v1/recommendations", json={"items": ["item-5"], "k": 10}).json()
        assert body["user_id"] == "" and body["personalized"] is True
        by_id = {i["item_id"]: i["source"] for i in body["items"]}
        assert by_id.get(fresh) == "covisitation" and "item-5" not in by_id, body
        bad = http.post("/v1/recommendations", json={"items": ["a\u0007b"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
        assert http.post("/v1/recommendations", json={"items": [f"i{n}" for n in range(51)]}).status_code == 422

        # A user whose last item is item-5: its neighbour comes from co-visitation.
        recs, _ = poll(lambda: http.get("/v1/users/browser/recommendations").json(),
                       lambda b: any(i["item_id"] == fresh for i in b["items"]), 10)
        assert {i["item_id"]: i["source"] for i in recs["items"]}.get(fresh) == "covisitation", recs
        # A regular buyer, repeats allowed: what they buy again comes first, named repeat.
        again, _ = poll(lambda: http.get("/v1/users/regular/recommendations",
                                          params={"exclude_seen": "false"}).json(),
                        lambda b: bool(b["items"]) and b["items"][0]["source"] == "repeat", 10)
        assert (again["items"][0]["item_id"], again["items"][0]["source"]) == ("item-7", "repeat"), again
        worker.assert_alive()
    store.close()
