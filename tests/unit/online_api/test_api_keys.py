"""Two key lists: full-access keys (STREAMREC_API_KEYS) and collector-only keys (STREAMREC_API_INGEST_KEYS).

Redis and Kafka point at closed ports: a request that passes the key check ends in 422 (bad body) or
503 (store down), never 401/403, which is all these tests need to tell the checks apart.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.storefront import public_ingest_key
from streamrec.settings import Settings

ADMIN = "admin-key-0123456789abcdef"
INGEST = "ingest-key-0123456789abcdef"
ITEM = {"category": "toys", "available": False}


def settings_for(**overrides: object) -> Settings:
    values: dict[str, object] = {"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap": "127.0.0.1:1",
                                 "api_keys": ADMIN, "api_ingest_keys": INGEST}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def client_for(**overrides: object) -> TestClient:
    return TestClient(create_app(settings_for(**overrides), background=False), raise_server_exceptions=False)


def passed_auth(status: int) -> bool:
    return status not in (401, 403)


def bad_event() -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "clack", "ts": 1}


def test_an_ingest_key_may_post_events_and_nothing_else() -> None:
    c = client_for()
    headers = {"X-API-Key": INGEST}
    # 422 on a bad body: the key was accepted and the body checked.
    assert c.post("/v1/events", json=bad_event(), headers=headers).status_code == 422
    assert c.post("/v1/events:batch", json={"events": [bad_event()]}, headers=headers).status_code == 422

    resp = c.put("/v1/items/i1", json=ITEM, headers=headers)
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "forbidden"
    assert "may only post events" in error["message"] and "STREAMREC_API_KEYS" in error["message"]
    assert INGEST not in resp.text  # the message names the setting, never the key


def test_an_admin_key_may_write_the_catalogue_and_post_events() -> None:
    c = client_for()
    headers = {"X-API-Key": ADMIN}
    assert c.post("/v1/events", json=bad_event(), headers=headers).status_code == 422
    assert passed_auth(c.put("/v1/items/i1", json=ITEM, headers=headers).status_code)  # 503: Redis is down


def test_missing_and_wrong_keys_are_401_and_403_everywhere() -> None:
    c = client_for()
    for method, path, body in [("POST", "/v1/events", bad_event()), ("PUT", "/v1/items/i1", ITEM)]:
        resp = c.request(method, path, json=body)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "X-API-Key", path
        resp = c.request(method, path, json=body, headers={"X-API-Key": "nope"})
        assert resp.status_code == 403 and resp.json()["error"]["message"] == "API key not accepted", path


def test_a_key_in_both_lists_has_full_access() -> None:
    c = client_for(api_ingest_keys=f"{INGEST},{ADMIN}")
    assert passed_auth(c.put("/v1/items/i1", json=ITEM, headers={"X-API-Key": ADMIN}).status_code)
    assert c.put("/v1/items/i1", json=ITEM, headers={"X-API-Key": INGEST}).status_code == 403


def test_ingest_keys_alone_open_the_collector_only() -> None:
    c = client_for(api_keys="")
    assert c.post("/v1/events", json=bad_event(), headers={"X-API-Key": INGEST}).status_code == 422
    resp = c.put("/v1/items/i1", json=ITEM, headers={"X-API-Key": INGEST})
    assert resp.status_code == 403 and "may only post events" in resp.json()["error"]["message"]
    resp = c.put("/v1/items/i1", json=ITEM, headers={"X-API-Key": "other"})
    assert resp.status_code == 401 and "STREAMREC_API_KEYS" in resp.json()["error"]["message"]


def test_no_keys_at_all_names_both_settings_on_the_collector() -> None:
    c = client_for(api_keys="", api_ingest_keys="")
    resp = c.post("/v1/events", json=bad_event(), headers={"X-API-Key": "anything"})
    assert resp.status_code == 401
    message = resp.json()["error"]["message"]
    assert "STREAMREC_API_KEYS" in message and "STREAMREC_API_INGEST_KEYS" in message


def test_keyed_reads_refuse_ingest_keys() -> None:
    c = client_for(api_read_keys_required=True)
    for path in ("/v1/trending", "/v1/users/u1/recommendations", "/v1/items", "/v1/categories"):
        assert c.get(path, headers={"X-API-Key": INGEST}).status_code == 403, path
        assert passed_auth(c.get(path, headers={"X-API-Key": ADMIN}).status_code), path


def test_storefront_config_hands_out_only_a_collector_only_key() -> None:
    got = client_for(storefront_ingest_key=INGEST).get("/storefront/config.json").json()
    assert got["ingest_key"] == INGEST
    assert client_for().get("/storefront/config.json").json()["ingest_key"] is None  # none configured


@pytest.mark.parametrize(("overrides", "why"), [
    ({"storefront_ingest_key": ADMIN}, "is one of STREAMREC_API_KEYS"),
    ({"storefront_ingest_key": INGEST, "api_keys": INGEST}, "is one of STREAMREC_API_KEYS"),  # in both lists
    ({"storefront_ingest_key": "stray"}, "is not one of STREAMREC_API_INGEST_KEYS"),
])
def test_storefront_never_publishes_a_full_access_or_unknown_key(
        overrides: dict[str, object], why: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamrec.api"):
        assert public_ingest_key(settings_for(**overrides)) is None
    assert why in caplog.text and str(overrides["storefront_ingest_key"]) not in caplog.text
    resp = client_for(**overrides).get("/storefront/config.json")
    assert resp.json()["ingest_key"] is None and ADMIN not in resp.text


def test_openapi_documents_both_key_lists() -> None:
    spec = client_for().get("/openapi.json").json()
    scheme = next(iter(spec["components"]["securitySchemes"].values()))
    assert "STREAMREC_API_INGEST_KEYS" in scheme["description"]
    assert spec["paths"]["/v1/events"]["post"]["security"] and spec["paths"]["/v1/items/{item_id}"]["put"]["security"]
