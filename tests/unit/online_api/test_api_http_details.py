"""HTTP details a client relies on: unparsable bodies in the error shape, HEAD on every GET route, no
redirect built from the client's ``Host`` header, and ``Retry-After`` on a not-ready ``/readyz``.

Redis and Kafka point at closed ports (as in test_api_http.py), so reads answer the 503 of an outage.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence

import pytest
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute, Route

from online_api.app import create_app
from streamrec.settings import Settings

KEY = "unit-test-key-0123456789"
EVENT = {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "click",
         "ts": "2026-01-01T00:00:00Z"}
DEEP = 10_000


@pytest.fixture
def client() -> TestClient:
    s = Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1", api_keys=KEY)
    return TestClient(create_app(s, background=False), raise_server_exceptions=False)


def in_context(value: bytes) -> bytes:
    """EVENT with ``value`` (raw JSON) as a context value."""
    return json.dumps(EVENT).encode()[:-1] + b', "context": {"a": ' + value + b"}}"


@pytest.mark.parametrize(("body", "why"), [
    (b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    (in_context(b'{"a":' * DEEP + b"1" + b"}" * DEEP), "nested too deeply"),
    (b'{"event_id": "\xff\xfe", "user_id": "\xc3\x28"}', "not valid UTF-8"),
    (json.dumps(EVENT).encode()[:40], "invalid JSON"),  # truncated: json's own message
])
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/events"), ("POST", "/v1/events:batch"),
                                              ("PUT", "/v1/items/i1")])
def test_unparsable_bodies_are_422_in_the_error_shape(client: TestClient, method: str, path: str, body: bytes,
                                                     why: str) -> None:
    resp = client.request(method, path, content=body, headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_input" and why in error["message"]
    assert [f["field"] for f in error["fields"]] == ["body"]
    assert why in error["fields"][0]["message"]


def get_paths(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[str]:
    """One concrete path for every route that answers GET (path parameters filled in), included routers too."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps included routers as one route
        if included is not None:
            yield from get_paths(included.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Route) and "GET" in (route.methods or ()):
            yield prefix + re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "app.js" if m.group(1) == "asset" else "x1",
                                  route.path)


def test_head_answers_every_get_route_as_get_does_without_a_body(client: TestClient) -> None:
    paths = list(get_paths(client.app.routes))  # type: ignore[attr-defined]
    assert {"/healthz", "/readyz", "/metrics", "/v1/trending", "/v1/users/x1/recommendations",
            "/v1/items/x1", "/store", "/storefront/config.json"} <= set(paths)
    for path in paths:
        got, head = client.get(path, follow_redirects=False), client.head(path, follow_redirects=False)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path
        if path != "/metrics":  # its length changes with the requests just counted
            assert head.headers.get("content-length") == got.headers.get("content-length"), path


def test_head_takes_the_recommendations_fast_lane_and_is_measured_as_head(client: TestClient) -> None:
    # Plain parameters: answered by online_api.fastpath (Redis down: the outage's 503, as for GET).
    head = client.head("/v1/users/u1/recommendations?k=5")
    assert head.status_code == 503 and head.content == b"" and head.headers["retry-after"]
    assert client.head("/v1/users/u1/recommendations?k=0").status_code == 422  # FastAPI's validation
    metrics = client.get("/metrics").text
    assert re.search(r'streamrec_api_request_duration_seconds_count\{method="HEAD",'
                     r'route="/v1/users/\{user_id\}/recommendations",status="503"\} 1', metrics), metrics


def test_head_is_not_an_alias_for_writes(client: TestClient) -> None:
    resp = client.head("/v1/events")
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/v1/trending/", "/healthz/", "/v1/users/u1/recommendations/"])
def test_no_redirect_is_built_from_the_host_header(client: TestClient, path: str) -> None:
    resp = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
    assert resp.status_code == 404, (resp.status_code, resp.headers)
    assert "location" not in resp.headers
    assert resp.json()["error"]["code"] == "not_found"


def test_not_ready_carries_retry_after(client: TestClient) -> None:
    resp = client.get("/readyz")  # no Redis, no model
    assert resp.status_code == 503 and resp.json()["status"] == "not ready"
    assert int(resp.headers["retry-after"]) >= 1
