"""The HTTP layer without services: validation, keys, limits, error shape, and never a 500.

Redis points at a closed port here, so these tests also show what a client sees while Redis is down.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.errors import validation_fields
from online_api.security import key_matches
from streamrec.settings import Settings

KEY = "unit-http-key-0123456789"
EVENT = {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "click",
         "ts": "2026-01-01T00:00:00Z"}


def app_for(**overrides: object) -> FastAPI:
    values: dict[str, object] = {"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap": "127.0.0.1:1",
                                 "api_keys": KEY, "max_k": 50, "max_body_bytes": 16384}
    values.update(overrides)
    return create_app(Settings(**values), background=False)  # type: ignore[arg-type]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = app_for()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    yield TestClient(app, raise_server_exceptions=False)


def assert_error(resp: object, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text  # type: ignore[attr-defined]
    body = resp.json()["error"]  # type: ignore[attr-defined]
    assert body["code"] == code and body["message"]
    assert "Traceback" not in resp.text  # type: ignore[attr-defined]
    return body  # type: ignore[no-any-return]


def test_k_and_ids_are_validated_with_field_messages(client: TestClient) -> None:
    body = assert_error(client.get("/v1/users/u1/recommendations?k=51"), 422, "invalid_input")
    assert body["fields"] == [{"field": "query.k", "message": "Input should be less than or equal to 50"}]
    assert_error(client.get("/v1/users/u1/recommendations?k=0"), 422, "invalid_input")
    body = assert_error(client.get("/v1/users/u%01x/recommendations"), 422, "invalid_input")
    assert body["fields"][0]["field"] == "path.user_id"  # type: ignore[index]
    assert_error(client.get("/v1/trending?window=5m"), 422, "invalid_input")
    many = ",".join(f"i{i}" for i in range(501))
    body = assert_error(client.get("/v1/users/u1/recommendations", params={"exclude": many}), 422, "invalid_input")
    assert body["fields"][0]["field"] == "query.exclude"  # type: ignore[index]


def test_writes_need_a_key(client: TestClient) -> None:
    resp = client.post("/v1/events", json=EVENT)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "X-API-Key"
    assert_error(client.post("/v1/events", json=EVENT, headers={"X-API-Key": KEY + "x"}), 403, "forbidden")
    assert_error(client.put("/v1/items/i1", json={"available": False}, headers={"X-API-Key": "nope"}), 403,
                 "forbidden")


def test_without_configured_keys_writes_are_refused() -> None:
    c = TestClient(app_for(api_keys=""), raise_server_exceptions=False)
    body = assert_error(c.post("/v1/events", json=EVENT, headers={"X-API-Key": "anything"}), 401, "unauthorized")
    assert "STREAMREC_API_KEYS" in str(body["message"])


def test_reads_can_require_a_key() -> None:
    c = TestClient(app_for(api_read_keys_required=True), raise_server_exceptions=False)
    assert_error(c.get("/v1/trending"), 401, "unauthorized")
    assert_error(c.get("/v1/items/x/similar", headers={"X-API-Key": "bad"}), 403, "forbidden")
    assert c.get("/healthz").status_code == 200  # operations endpoints stay open


def test_bad_events_get_every_field_error(client: TestClient) -> None:
    bad = {**EVENT, "event_id": "nope", "user_id": "", "type": "clack", "extra": 1}
    body = assert_error(client.post("/v1/events", json=bad, headers={"X-API-Key": KEY}), 422, "invalid_input")
    fields = {f["field"] for f in body["fields"]}  # type: ignore[attr-defined]
    assert {"body.event_id", "body.user_id", "body.type", "body.extra"} <= fields
    future = {**EVENT, "ts": 4_000_000_000_000}
    body = assert_error(client.post("/v1/events", json=future, headers={"X-API-Key": KEY}), 422, "invalid_input")
    assert body["fields"] == [{"field": "body.ts", "message": body["fields"][0]["message"]}]  # type: ignore[index]
    huge = {**EVENT, "context": {f"k{i}": "x" * 250 for i in range(32)}}  # valid fields, > 8 KiB encoded
    body = assert_error(client.post("/v1/events", json=huge, headers={"X-API-Key": KEY}), 422, "invalid_input")
    assert "8192" in str(body["message"])
    resp = client.post("/v1/events:batch", json={"events": [EVENT, {**EVENT, "item_id": ""}]},
                       headers={"X-API-Key": KEY})
    body = assert_error(resp, 422, "invalid_input")
    assert body["fields"][0]["field"] == "body.events[1].item_id"  # type: ignore[index]
    resp = client.post("/v1/events", content=b"{not json", headers={"X-API-Key": KEY,
                                                                   "content-type": "application/json"})
    assert assert_error(resp, 422, "invalid_input")["fields"][0]["field"] == "body"  # type: ignore[index]


def test_bodies_over_the_limit_get_413(client: TestClient) -> None:
    big = b'{"events": [' + b" " * 17000 + b"]}"
    headers = {"X-API-Key": KEY, "content-type": "application/json"}
    assert_error(client.post("/v1/events:batch", content=big, headers=headers), 413, "body_too_large")
    chunks = iter([b'{"events": [', b" " * 9000, b" " * 9000, b"]}"])  # no Content-Length: chunked
    assert_error(client.post("/v1/events:batch", content=chunks, headers=headers), 413, "body_too_large")


def test_unexpected_errors_are_503_without_details(client: TestClient) -> None:
    resp = client.get("/boom")
    assert_error(resp, 503, "unavailable")
    assert "internal detail" not in resp.text and resp.headers["retry-after"]


def test_redis_down_is_503_with_retry_after(client: TestClient) -> None:
    resp = client.get("/v1/users/u1/recommendations")
    assert_error(resp, 503, "unavailable")
    assert int(resp.headers["retry-after"]) > 0
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["redis"] is False


def test_unknown_routes_and_methods_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    assert_error(client.delete("/v1/trending"), 405, "method_not_allowed")


def test_server_timing_header_and_metrics(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.headers["server-timing"].startswith("app;dur=")
    client.get("/v1/users/u1/recommendations?k=999")
    text = client.get("/metrics").text
    assert 'streamrec_api_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/v1/users/{user_id}/recommendations",status="422"' in text
    assert 'streamrec_api_recommendations_total{kind="fallback"}' in text
    client.post("/v1/events", json={"user_id": ""}, headers={"X-API-Key": KEY})
    assert 'streamrec_api_events_total{outcome="invalid"} 1.0' in client.get("/metrics").text


def test_openapi_documents_routes_examples_and_the_key(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar", "/v1/trending",
                 "/v1/users/{user_id}/recommendations/{item_id}/explain", "/v1/events", "/v1/events:batch",
                 "/v1/items/{item_id}", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert spec["components"]["schemas"]["Recommendations"]["examples"]
    assert "503" in paths["/v1/events"]["post"]["responses"]


def test_cors_only_for_configured_origins() -> None:
    c = TestClient(app_for(cors_origins="https://shop.example"), raise_server_exceptions=False)
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"}
    ok = c.options("/v1/events", headers={"Origin": "https://shop.example", **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example"
    other = c.options("/v1/events", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in other.headers


def test_key_comparison() -> None:
    keys = [b"alpha", b"beta"]
    assert key_matches("beta", keys) and not key_matches("bet", keys) and not key_matches("", keys)
    assert key_matches("ünï", ["ünï".encode()])


def test_validation_fields_format() -> None:
    errors = [{"loc": ("body", "events", 3, "user_id"), "msg": "too short"},
              {"type": "json_invalid", "loc": ("body", 7), "msg": "JSON decode error", "ctx": {"error": "Expecting"}}]
    assert validation_fields(errors) == [{"field": "body.events[3].user_id", "message": "too short"},
                                         {"field": "body", "message": "invalid JSON: Expecting"}]
