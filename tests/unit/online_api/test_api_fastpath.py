"""The recommendations fast lane: what it takes, what it leaves to FastAPI, and that both answer alike.

Redis points at a closed port, so every recommendation answer here is the 503 of a Redis outage: the
same answer has to come out of both lanes, through the same exception handlers, keys, CORS and metrics.
Answers with a real model are compared in tests/integration/test_api_fastpath.py.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.fastpath import parse_query
from online_api.schemas import Ranked, RecommendationList, Recommendations, RecommendedItem, Source
from streamrec.settings import Settings

KEY = "unit-fastpath-key-0123456789"
PATH = "/v1/users/u1/recommendations"


def client_for(**overrides: object) -> TestClient:
    values: dict[str, object] = {"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap": "127.0.0.1:1",
                                 "api_keys": KEY, "max_k": 50}
    values.update(overrides)
    return TestClient(create_app(Settings(**values), background=False),  # type: ignore[arg-type]
                      raise_server_exceptions=False)


@pytest.mark.parametrize(("query", "expected"), [
    ("", (10, True, None, [])),
    ("k=5", (5, True, None, [])),
    ("k=50&exclude_seen=false&category=shoes", (50, False, "shoes", [])),
    ("exclude_seen=0&exclude=a,b&exclude=c&utm_source=x", (10, False, None, ["a", "b", "c"])),
    ("category=caf%C3%A9&k=1", (1, True, "café", [])),
    ("exclude=" + ",".join(f"i{i}" for i in range(500)), (10, True, None, [f"i{i}" for i in range(500)])),
])
def test_plainly_valid_parameters_take_the_fast_lane(query: str, expected: tuple[object, ...]) -> None:
    assert parse_query(query.encode(), 50) == expected


@pytest.mark.parametrize("query", [
    "k=0", "k=51", "k=05", "k=+5", "k=%205", "k=5.0", "k=", "k", "k=5&k=6", "exclude_seen=yes",
    "exclude_seen=True", "exclude_seen=", "category=", "category=a%01b", "category=" + "c" * 129,
    "category=a&category=b", "exclude=" + ",".join(f"i{i}" for i in range(501)),
    "&".join(f"exclude=i{i}" for i in range(501)),
])
def test_anything_else_is_left_to_fastapi(query: str) -> None:
    assert parse_query(query.encode(), 50) is None


def test_both_lanes_answer_a_redis_outage_alike_and_are_measured_as_one_route() -> None:
    c = client_for()
    fast, routed = c.get(PATH + "?k=5"), c.get(PATH + "?k=05")  # "05": FastAPI coerces it, the lane does not
    assert fast.status_code == routed.status_code == 503
    assert fast.json() == routed.json() and fast.json()["error"]["code"] == "unavailable"
    assert fast.headers["retry-after"] == routed.headers["retry-after"]
    assert fast.headers["server-timing"].startswith("app;dur=")
    count = ('streamrec_api_request_duration_seconds_count{method="GET",'
             'route="/v1/users/{user_id}/recommendations",status="503"} 2.0')
    assert count in c.get("/metrics").text


def test_invalid_requests_keep_fastapis_field_errors() -> None:
    c = client_for()
    body = c.get(PATH + "?k=51").json()["error"]
    assert body["fields"] == [{"field": "query.k", "message": "Input should be less than or equal to 50"}]
    assert c.get("/v1/users/u%01x/recommendations").json()["error"]["fields"][0]["field"] == "path.user_id"
    assert c.get("/v1/users/" + "u" * 129 + "/recommendations").status_code == 422
    assert c.post(PATH).status_code == 405


@pytest.mark.parametrize("query", ["k=5", "k=05"])
def test_read_keys_apply_to_both_lanes(query: str) -> None:
    c = client_for(api_read_keys_required=True)
    missing = c.get(f"{PATH}?{query}")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "X-API-Key"
    assert c.get(f"{PATH}?{query}", headers={"X-API-Key": "nope"}).status_code == 403
    assert c.get(f"{PATH}?{query}", headers={"X-API-Key": ""}).status_code == 401
    assert c.get(f"{PATH}?{query}", headers={"X-API-Key": KEY}).status_code == 503  # past the key: Redis is down


def test_cors_headers_on_the_fast_lane() -> None:
    c = client_for(cors_origins="https://shop.example")
    resp = c.get(PATH + "?" + urlencode({"k": 3}), headers={"Origin": "https://shop.example"})
    assert resp.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in c.get(PATH, headers={"Origin": "https://evil.example"}).headers


def test_the_answer_bytes_are_the_documented_schema() -> None:
    answer = RecommendationList("ü-1", "v1", 4.25, True, [Ranked("sku-ä", 0.93, Source.PERSONAL),
                                                         Ranked("sku-2", 1e-07, Source.TRENDING)])
    raw = answer.to_json()
    parsed = Recommendations.model_validate_json(raw)
    assert parsed.model_dump(mode="json") == {
        "user_id": "ü-1", "model_version": "v1", "vector_age_s": 4.25, "personalized": True,
        "items": [{"item_id": "sku-ä", "score": 0.93, "source": "personal"},
                  {"item_id": "sku-2", "score": 1e-07, "source": "trending"}]}
    decoded = json.loads(raw)  # and in the schema's field order
    assert list(decoded) == list(Recommendations.model_fields)
    assert [list(item) for item in decoded["items"]] == [list(RecommendedItem.model_fields)] * 2
    empty = RecommendationList("u", None, None, False, []).to_json()
    assert Recommendations.model_validate_json(empty).items == []
