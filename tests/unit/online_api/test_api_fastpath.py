"""The recommendations fast lane: what it takes, what it leaves to FastAPI, and that both answer alike.

Redis points at a closed port, so every recommendation answer here is the 503 of a Redis outage: the
same answer has to come out of both lanes, through the same exception handlers, keys, CORS and metrics.
Answers with a real model are compared in tests/integration/test_api_fastpath.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Annotated
from urllib.parse import urlencode

import pytest
from annotated_types import MultipleOf
from fastapi import APIRouter, Query
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from online_api.app import create_app
from online_api.fastpath import LanePlan, RecommendationsFastPath, plan_for
from online_api.routes import read_router, route_named
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


def live_lane(c: TestClient) -> RecommendationsFastPath:
    """The lane instance the app runs (the middleware stack is built on the first request)."""
    c.get("/healthz")
    layer = c.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, RecommendationsFastPath):
        layer = layer.app
    return layer


@pytest.fixture(scope="module")
def plan() -> LanePlan:
    return live_lane(client_for()).plan


@pytest.mark.parametrize(("query", "expected"), [
    ("", (10, True, None, [])),
    ("k=5", (5, True, None, [])),
    ("k=50&exclude_seen=false&category=shoes", (50, False, "shoes", [])),
    ("exclude_seen=0&exclude=a,b&exclude=c", (10, False, None, ["a", "b", "c"])),
    ("category=caf%C3%A9&k=1", (1, True, "café", [])),
    ("exclude=" + ",".join(f"i{i}" for i in range(500)), (10, True, None, [f"i{i}" for i in range(500)])),
])
def test_plainly_valid_parameters_take_the_fast_lane(plan: LanePlan, query: str, expected: tuple[object, ...]) -> None:
    assert plan.parse(query.encode()) == dict(zip(("k", "exclude_seen", "category", "exclude"), expected, strict=True))


@pytest.mark.parametrize("query", [
    "k=0", "k=51", "k=05", "k=+5", "k=%205", "k=5.0", "k=", "k", "k=5&k=6", "exclude_seen=yes",
    "exclude_seen=True", "exclude_seen=", "category=", "category=a%01b", "category=" + "c" * 129,
    "category=a&category=b", "exclude=" + ",".join(f"i{i}" for i in range(501)),
    "&".join(f"exclude=i{i}" for i in range(501)),
    "utm_source=x", "k=5&K=5", "k=5&exclude_seen=1&unknown=", "limit=5",  # not the route's: its to answer
])
def test_anything_else_is_left_to_fastapi(plan: LanePlan, query: str) -> None:
    assert plan.parse(query.encode()) is None


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


# ------------------------------------------------------------------ the lane cannot drift from the route
def route_query_parameters(c: TestClient) -> set[str]:
    """The route's query parameters as documented (OpenAPI); the dependant must say the same."""
    documented = c.app.openapi()["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]  # type: ignore[attr-defined]
    return {p["name"] for p in documented if p["in"] == "query"}


def dependant_query_parameters(route: APIRoute) -> set[str]:
    found, todo = set(), [route.dependant]
    while todo:
        dep = todo.pop()
        found |= {f.alias for f in dep.query_params}
        todo += dep.dependencies
    return found


@pytest.mark.parametrize("read_keys", [False, True])
def test_the_lane_handles_every_query_parameter_of_the_route(read_keys: bool) -> None:
    c = client_for(api_read_keys_required=read_keys)
    lane = live_lane(c)
    declared = route_query_parameters(c)
    assert declared == dependant_query_parameters(lane.route) and declared  # the lane reads the served route
    for name in sorted(declared):
        assert name in lane.plan.parsers, (
            f"GET /v1/users/{{user_id}}/recommendations has query parameter {name!r} that online_api/fastpath.py "
            f"does not handle (no parser in BUILDERS, or declared differently from what its parser handles): "
            f"the fast lane is off; give it a parser that answers exactly as the route does")
    assert lane.plan.unhandled == ()


class StubService:
    """Records each service call and answers ``k`` popular items, so both lanes' calls can be compared."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []

    async def recommend(self, user_id: str, k: int, *, exclude_seen: bool = True, category: str | None = None,
                        exclude: list[str] | None = None) -> RecommendationList:
        self.calls.append((user_id, {"k": k, "exclude_seen": exclude_seen, "category": category,
                                     "exclude": list(exclude or [])}))
        return RecommendationList(user_id, "v1", None, False, [Ranked(f"i{n}", 1.0, Source.POPULAR)
                                                               for n in range(k)])


def counting_client(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, StubService, list[str]]:
    """An app whose service is a :class:`StubService`; the list collects the queries the lane passed on."""
    c = client_for()
    stub = StubService()
    monkeypatch.setattr(c.app.state.service, "recommend", stub.recommend)  # type: ignore[attr-defined]
    lane = live_lane(c)
    routed: list[str] = []
    inner = lane.app

    async def count(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == PATH:
            routed.append(scope["query_string"].decode())
        await inner(scope, receive, send)

    lane.app = count
    return c, stub, routed


@pytest.mark.parametrize(("fast", "routed"), [
    ("k=5", "k=05"),
    ("k=7&exclude_seen=false&category=shoes", "k=7&exclude_seen=no&category=shoes"),
    ("exclude=a,b&exclude=c", "exclude=a&exclude=b,c&k=010"),
])
def test_both_lanes_make_the_same_service_call(monkeypatch: pytest.MonkeyPatch, fast: str, routed: str) -> None:
    c, stub, passed = counting_client(monkeypatch)
    a, b = c.get(f"{PATH}?{fast}"), c.get(f"{PATH}?{routed}")
    assert passed == [routed]  # the first was the lane's, the second the route's
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert stub.calls[0] == stub.calls[1]


@pytest.mark.parametrize("query", ["k=5&utm_source=x", "k=5&limit=3", "k=5&Exclude=i1", "k=5&exclude_seen=1&x="])
def test_a_parameter_the_route_does_not_declare_is_the_routes_to_answer(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    c, stub, passed = counting_client(monkeypatch)
    routed, plain = c.get(f"{PATH}?{query}"), c.get(f"{PATH}?k=5&exclude_seen=1")
    assert passed == [query]  # never dropped by the lane: the route decided (it ignores undeclared parameters)
    assert routed.status_code == plain.status_code == 200 and routed.content == plain.content
    assert stub.calls[0] == stub.calls[1]


def extended_route(**extra: object) -> APIRoute:
    """The real recommendations route plus one more query parameter (as a future change would add it)."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1", max_k=50)
    real = route_named(read_router(settings, StubService(), []), "recommendations")  # type: ignore[arg-type]
    router = APIRouter()
    params = list(inspect.signature(real.endpoint).parameters.values())
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
               for name, (a, d) in extra.items()]  # type: ignore[misc]

    async def endpoint(**kwargs: object) -> None:
        return None

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    router.add_api_route(real.path, endpoint, name="recommendations")
    return route_named(router, "recommendations")


def test_a_route_parameter_the_lane_does_not_handle_switches_the_lane_off() -> None:
    diversity = extended_route(diversity=(Annotated[float, Query(ge=0, le=1)], 0.0))
    assert plan_for(diversity).unhandled == ("query.diversity",)
    redeclared = extended_route()
    redeclared.dependant.query_params[0].field_info.metadata.append(MultipleOf(2))  # k: now even numbers only
    assert plan_for(redeclared).unhandled == ("query.k",)
    passed: list[bytes] = []

    async def route_app(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append(scope["query_string"])

    lane = RecommendationsFastPath(route_app, svc=StubService(), route=diversity, handlers={})  # type: ignore[arg-type]
    for query in (b"", b"k=5", b"k=5&diversity=0.5"):
        scope = {"type": "http", "method": "GET", "path": PATH, "query_string": query, "headers": []}
        asyncio.run(lane(scope, None, None))  # type: ignore[arg-type]
    assert passed == [b"", b"k=5", b"k=5&diversity=0.5"]  # every request went to the route
