"""The event collector through HTTP: accepted events are in Kafka; rejected ones are not; no Kafka → 503."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from online_api.server import ApiProcess, free_port
from streamrec.events import decode_event, now_ms
from streamrec.kafka_io import end_offsets, read_all
from streamrec.settings import Settings

KEY = "collector-key-0123456789"


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": "u-1", "item_id": "sku-1", "type": "click", "ts": now_ms(),
            **fields}


def test_accepted_events_are_in_kafka_and_rejected_batches_write_nothing(make_settings: Any) -> None:
    settings: Settings = make_settings(api_keys=KEY)
    headers = {"X-API-Key": KEY}
    with ApiProcess(settings) as api, httpx.Client(base_url=api.url, headers=headers, timeout=15) as http:
        one = event(context={"page": "home"})
        resp = http.post("/v1/events", json=one)
        assert resp.status_code == 202, resp.text
        assert resp.json() == {"accepted": 1, "event_ids": [one["event_id"]]}
        batch = [event(user_id="u-2"), event(user_id="u-3", type="purchase", quantity=2, price=9.5),
                 event(user_id="u-2", item_id="sku-9", ts="2026-01-01T10:00:00Z"),
                 event(user_id="u-3", type="add_to_cart"), event(user_id="u-3", type="view")]
        resp = http.post("/v1/events:batch", json={"events": batch})
        assert resp.status_code == 202, resp.text
        assert resp.json()["event_ids"] == [e["event_id"] for e in batch]

        # Answered 202 means acknowledged: everything is readable right away, on the right topic.
        records = list(read_all(settings, settings.event_topics))
        got = {str(decode_event(r.value).event_id): r for r in records}
        assert set(got) == {one["event_id"], *(e["event_id"] for e in batch)}
        for sent in [one, *batch]:
            rec = got[sent["event_id"]]
            ev = decode_event(rec.value)
            assert rec.topic == settings.topic_for(sent["type"]) and rec.key == sent["user_id"].encode()
            assert ev.item_id == sent["item_id"] and ev.type.value == sent["type"]
        assert decode_event(got[one["event_id"]].value).context == {"page": "home"}

        # One bad event rejects the whole batch, and nothing reaches Kafka.
        before = end_offsets(settings, settings.event_topics)
        resp = http.post("/v1/events:batch", json={"events": [event(), event(type="like")]})
        assert resp.status_code == 422
        assert resp.json()["error"]["fields"][0]["field"] == "body.events[1].type"
        time.sleep(0.5)
        assert end_offsets(settings, settings.event_topics) == before


def test_kafka_unreachable_is_a_prompt_503_with_retry_after(make_settings: Any) -> None:
    settings: Settings = make_settings(api_keys=KEY, api_produce_timeout_s=2.0)
    # The API's Kafka is a closed port; Redis is real.
    unreachable = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    with ApiProcess(unreachable) as api, httpx.Client(base_url=api.url, headers={"X-API-Key": KEY},
                                                      timeout=30) as http:
        for _ in range(3):
            start = time.monotonic()
            resp = http.post("/v1/events", json=event())
            took = time.monotonic() - start
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["retry-after"]) >= 1
            assert resp.json()["error"]["code"] == "unavailable"
            assert took < 2.0 + 2.0  # bounded by the produce timeout, never a hang
        assert http.get("/healthz").status_code == 200  # reads and liveness are unaffected
        assert http.get("/v1/trending").status_code == 200
    assert list(read_all(settings, settings.event_topics)) == []


def test_an_ingest_key_posts_events_but_cannot_write_the_catalogue(make_settings: Any) -> None:
    """The storefront's public key: the collector takes it, catalogue writes refuse it; a full key does both."""
    ingest = f"ingest-{uuid.uuid4().hex}"
    settings: Settings = make_settings(api_keys=KEY, api_ingest_keys=ingest, storefront_ingest_key=ingest)
    item = {"category": "toys", "available": True, "attributes": {"name": "kite"}}
    with ApiProcess(settings) as api, httpx.Client(base_url=api.url, timeout=15) as http:
        # The page is handed the collector-only key.
        assert http.get("/storefront/config.json").json()["ingest_key"] == ingest

        as_ingest = {"X-API-Key": ingest}
        one, batch = event(user_id="u-ingest"), [event(user_id="u-ingest", type="purchase")]
        assert http.post("/v1/events", json=one, headers=as_ingest).status_code == 202
        assert http.post("/v1/events:batch", json={"events": batch}, headers=as_ingest).status_code == 202

        resp = http.put("/v1/items/sku-ingest", json=item, headers=as_ingest)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "forbidden"
        assert "may only post events" in resp.json()["error"]["message"]
        assert http.get("/v1/items/sku-ingest").status_code == 404  # nothing was written
        assert http.put("/v1/items/sku-ingest", json=item).status_code == 401  # no key: 401 as before

        as_admin = {"X-API-Key": KEY}
        resp = http.put("/v1/items/sku-ingest", json=item, headers=as_admin)
        assert resp.status_code == 200, resp.text
        assert http.get("/v1/items/sku-ingest").json()["category"] == "toys"
        admin_event = event(user_id="u-admin")
        assert http.post("/v1/events", json=admin_event, headers=as_admin).status_code == 202

    got = {str(decode_event(r.value).event_id) for r in read_all(settings, settings.event_topics)}
    assert got == {one["event_id"], batch[0]["event_id"], admin_event["event_id"]}
