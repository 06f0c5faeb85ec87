"""Strings and types the API refuses with 422 before anything reaches Kafka or Redis.

Redis and Kafka point at closed ports: anything that got past validation would answer 503, so a 422 here
shows the request was judged invalid, and a 503 that it was not (what lone surrogates got before: a 503
that clients retry for ever, and for items a write that broke every later read of the item).
"""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from online_api.app import create_app
from streamrec.events import now_ms
from streamrec.settings import Settings

KEY = "contract-strings-admin-key-0123456789"


@pytest.fixture(scope="module")
def client() -> TestClient:
    s = Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1", api_keys=KEY)  # type: ignore[call-arg]
    return TestClient(create_app(s, background=False), raise_server_exceptions=False)


def send(client: TestClient, method: str, path: str, body: str) -> tuple[int, dict[str, object]]:
    resp = client.request(method, path, content=body.encode(),
                          headers={"X-API-Key": KEY, "Content-Type": "application/json"})
    return resp.status_code, resp.json()


def event_json(**fields: object) -> str:
    e = {"event_id": str(uuid.uuid4()), "user_id": "u", "item_id": "new-item", "type": "click", "ts": now_ms()}
    return json.dumps({**e, **fields})  # lone surrogates come out as \udXXX escapes, as a client sends them


@pytest.mark.parametrize("fields", [
    {"context": {"category": "\ud83d"}},
    {"context": {"page": "\ud800"}},
    {"context": {"category": "evil\u0000\u001b[2J"}},
    {"type": "purchase", "quantity": "2"},
    {"type": "purchase", "price": "9.5"},
    {"type": "\ud800"},  # msgspec cannot compare it with an enum value: judged before, never a 503
    {"x\ud800": 1},
    {"ts": 1.7e12},  # epoch milliseconds are a JSON integer
])
def test_events_with_unwritable_strings_or_loose_types_are_422(client: TestClient, fields: dict[str, object]) -> None:
    for path, body in (("/v1/events", event_json(**fields)),
                       ("/v1/events:batch", '{"events": [' + event_json(**fields) + "]}")):
        status, answer = send(client, "POST", path, body)
        assert status == 422, (path, status, answer)
        assert answer["error"]["code"] == "invalid_input"  # type: ignore[index]


@pytest.mark.parametrize("body", [
    '{"attributes": {"a": "\\ud800"}}',
    '{"attributes": {"\\ud800": 1}}',
    '{"category": "\\udfff"}',
    '{"category": "a\\u0000b"}',
    '{"available": "yes"}',
    '{"attributes": {"price": NaN}}',
    '{"attributes": {"price": Infinity}}',
    '{"attributes": {"nested": {"a": 1}}}',
])
def test_catalogue_writes_with_unwritable_strings_or_loose_types_are_422(client: TestClient, body: str) -> None:
    status, answer = send(client, "PUT", "/v1/items/x", body)
    assert status == 422, (body, status, answer)
    assert answer["error"]["code"] == "invalid_input"  # type: ignore[index]


def test_a_valid_catalogue_write_gets_past_validation(client: TestClient) -> None:
    status, _ = send(client, "PUT", "/v1/items/x", '{"category": "shoes", "attributes": {"price": 9.5, "t": "😀"}}')
    assert status == 503  # valid: it reached the (closed) Redis
