"""The read endpoints through HTTP: a real uvicorn process on real Redis, with a published model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import scipy.sparse as sp

from models.foldin import fold_in_users
from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.catalog import categories_of
from streamrec.store.models import current_version, get_user_vectors, load_model
from streamrec.store.trending import top_trending
from streamrec.store.users import read_histories
from tests.integration.services import isolated_settings

KEY = "it-reads-key-0123456789"
BLEND = 0.3


@dataclass
class Api:
    url: str
    settings: Settings
    store: RedisStore
    users: list[str]
    http: httpx.Client

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.http.get(self.url + path, params=params)  # type: ignore[arg-type]

    def put_item(self, item: str, available: bool, category: str | None = None) -> None:
        resp = self.http.put(f"{self.url}/v1/items/{item}", json={"available": available, "category": category},
                             headers={"X-API-Key": KEY})
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def api(endpoints: tuple[str, str]) -> Iterator[Api]:
    """The API as deployed (hybrid ranking), on a synthetic model."""
    settings = isolated_settings(*endpoints, api_keys=KEY, blend_weight=BLEND, max_k=100)
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=400, users=40, factors=16, seed=3))
    try:
        with ApiProcess(settings) as proc, httpx.Client(timeout=10) as http:
            proc.wait_for("/readyz")
            yield Api(proc.url, settings, store, users, http)
    finally:
        keys = list(store.client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
        if keys:
            store.client.delete(*keys)
        store.close()


@pytest.fixture(scope="module")
def als_api(api: Api) -> Iterator[Api]:
    """The same data served by the ALS-only path (STREAMREC_API_HYBRID=false): the documented blend formula."""
    settings = api.settings.model_copy(update={"api_hybrid": False})
    with ApiProcess(settings) as proc:
        proc.wait_for("/readyz")
        yield Api(proc.url, settings, api.store, api.users, api.http)


def expected_personal(api: Api, user: str, k: int, exclude_seen: bool = True) -> list[str]:
    """The documented blend, computed from what is in Redis, densely and in float64."""
    model = load_model(api.store)
    assert model is not None
    vec = get_user_vectors(api.store, model.version, [user])[0]
    assert vec is not None
    s = model.item_factors.astype(np.float64) @ vec.astype(np.float64)
    unavailable = {m.decode() for m in api.store.client.smembers(api.store.keys.unavailable)}
    trending = top_trending(api.store, "1h", k=200, exclude=unavailable)
    t = np.zeros(len(model.item_ids))
    for item, score in trending:
        t[model.item_index[item]] = score / trending[0][1]
    banned = set(unavailable)
    if exclude_seen:
        banned |= {h.item for h in read_histories(api.store, [user])[user]}
    # Personal scores are normalised by the best item the user can be shown (seen/unavailable excluded).
    allowed = np.array([i not in banned for i in model.item_ids])
    final = (1 - BLEND) * s / s[allowed].max() + BLEND * t
    ranked = [model.item_ids[i] for i in np.argsort(-final, kind="stable")]
    return [i for i in ranked if i not in banned][:k]


def test_personal_recommendations_are_the_blend_of_the_users_vector_and_trending(als_api: Api) -> None:
    api = als_api
    for user in api.users[:5]:
        body = api.get(f"/v1/users/{user}/recommendations", k=10).json()
        assert body["personalized"] is True and body["model_version"] == current_version(api.store)
        assert 0 <= body["vector_age_s"] < 3600
        assert [i["item_id"] for i in body["items"]] == expected_personal(api, user, 10)
        assert {i["source"] for i in body["items"]} <= {"personal", "trending"}
    user = api.users[5]
    with_seen = api.get(f"/v1/users/{user}/recommendations", k=30, exclude_seen="false").json()
    assert [i["item_id"] for i in with_seen["items"]] == expected_personal(api, user, 30, exclude_seen=False)
    first_two = [i["item_id"] for i in with_seen["items"][:2]]
    without = api.get(f"/v1/users/{user}/recommendations", k=30, exclude_seen="false",
                      exclude=",".join(first_two)).json()
    assert not set(first_two) & {i["item_id"] for i in without["items"]}


def test_category_filter(api: Api) -> None:
    body = api.get(f"/v1/users/{api.users[0]}/recommendations", k=8, category="cat-3").json()
    items = [i["item_id"] for i in body["items"]]
    assert len(items) == 8 and set(categories_of(api.store, items)) == {"cat-3"}


def test_an_unknown_user_gets_trending_then_popular(als_api: Api) -> None:
    api = als_api
    unavailable = {m.decode() for m in api.store.client.smembers(api.store.keys.unavailable)}
    trending = [i for i, _ in top_trending(api.store, "1h", k=200, exclude=unavailable)]
    body = api.get("/v1/users/nobody-at-all/recommendations", k=10).json()
    assert body["personalized"] is False and body["vector_age_s"] is None
    assert [i["item_id"] for i in body["items"]] == trending[:10]
    assert {i["source"] for i in body["items"]} == {"trending"}
    # In one category trending runs out quickly; items that are only popular fill the rest.
    cat_trending = [i for i, _ in top_trending(api.store, "1h", "cat-5", k=200, exclude=unavailable)]
    popular_only = ["pop-only-1", "pop-only-2", "pop-only-3"]  # all-time sellers with no recent traffic
    assert 0 < len(cat_trending) < 90
    api.store.client.zadd(api.store.keys.popular("cat-5"), {item: 1e6 - n for n, item in enumerate(popular_only)})
    deadline = time.monotonic() + 10
    while True:  # category lists are cached for a second or two
        got = api.get("/v1/users/nobody-at-all/recommendations", k=100, category="cat-5").json()["items"]
        if len(got) > len(cat_trending) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    n = len(cat_trending)
    assert [i["item_id"] for i in got[:n]] == cat_trending
    assert [i["item_id"] for i in got[n : n + 3]] == popular_only
    assert {i["source"] for i in got[:n]} == {"trending"} and {i["source"] for i in got[n:]} == {"popular"}
    assert len({i["item_id"] for i in got}) == len(got)


def test_an_unavailable_item_never_appears_in_any_answer(api: Api) -> None:
    user = api.users[7]
    top_personal = api.get(f"/v1/users/{user}/recommendations", k=5).json()["items"][0]["item_id"]
    top_trending_item = api.get("/v1/trending", k=5).json()["items"][0]["item_id"]
    similar_to = "item-11"
    top_similar = api.get(f"/v1/items/{similar_to}/similar", k=5).json()["items"][0]["item_id"]
    hidden = {top_personal, top_trending_item, top_similar}

    def everything() -> set[str]:
        seen: set[str] = set()
        for u in (user, "nobody-at-all"):
            seen |= {i["item_id"] for i in api.get(f"/v1/users/{u}/recommendations", k=100).json()["items"]}
        seen |= {i["item_id"] for i in api.get("/v1/trending", k=100).json()["items"]}
        seen |= {i["item_id"] for i in api.get("/v1/trending", k=100, window="1d").json()["items"]}
        seen |= {i["item_id"] for i in api.get(f"/v1/items/{similar_to}/similar", k=100).json()["items"]}
        return seen

    assert hidden <= everything()  # visible before: the check below can fail
    for item in hidden:
        api.put_item(item, available=False)
    assert not hidden & everything()  # at once: no wait for a refresh
    for item in hidden:
        assert api.get(f"/v1/items/{item}").json()["available"] is False
    for item in hidden:
        api.put_item(item, available=True)
    assert hidden <= everything()


def test_similar_items_are_the_nearest_by_cosine(api: Api) -> None:
    model = load_model(api.store)
    assert model is not None
    body = api.get("/v1/items/item-20/similar", k=5, kind="factors").json()
    assert body["kind"] == "factors"
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    cos = unit @ unit[model.item_index["item-20"]]
    unavailable = {m.decode() for m in api.store.client.smembers(api.store.keys.unavailable)}
    ranked = [model.item_ids[i] for i in np.argsort(-cos) if model.item_ids[i] not in unavailable | {"item-20"}]
    assert [i["item_id"] for i in body["items"]] == ranked[:5]
    np.testing.assert_allclose([i["score"] for i in body["items"]],
                               [cos[model.item_index[i]] for i in ranked[:5]], atol=1e-5)


def test_explanations_add_up_to_the_fold_in_score(api: Api) -> None:
    user = api.users[2]
    item = api.get(f"/v1/users/{user}/recommendations", k=1).json()["items"][0]["item_id"]
    body = api.get(f"/v1/users/{user}/recommendations/{item}/explain", n=50).json()
    model = load_model(api.store)
    assert model is not None
    history = read_histories(api.store, [user])[user]
    idx = [model.item_index[h.item] for h in history]
    row = sp.csr_matrix((np.ones(len(idx)), (np.zeros(len(idx)), idx)), shape=(1, len(model.item_ids)))
    row.sum_duplicates()
    x = fold_in_users(model.item_factors, model.gram, row, api.settings.als_regularization, api.settings.als_alpha)
    assert body["score"] == pytest.approx(float(x[0] @ model.item_factors[model.item_index[item]]), abs=1e-4)
    contributions = [c["contribution"] for c in body["contributions"]]
    assert contributions == sorted(contributions, reverse=True)
    assert {c["item_id"] for c in body["contributions"]} <= {h.item for h in history}
    if len(set(idx)) <= 50:
        assert sum(contributions) == pytest.approx(body["score"], abs=1e-4)
    assert api.get(f"/v1/users/nobody/recommendations/{item}/explain").status_code == 404
    assert api.get(f"/v1/users/{user}/recommendations/no-such-item/explain").status_code == 404


def test_bad_inputs_get_4xx_with_messages(api: Api) -> None:
    cases = [
        ("GET", "/v1/users/u/recommendations?k=101", None, 422),
        ("GET", "/v1/users/u/recommendations?k=abc", None, 422),
        ("GET", "/v1/users/u%07/recommendations", None, 422),
        ("GET", "/v1/trending?window=7d", None, 422),
        ("GET", "/v1/items/nope/similar", None, 404),
        ("GET", "/v1/items/nope", None, 404),
        ("GET", "/v1/nothing", None, 404),
        ("PUT", "/v1/items/x", {"available": "maybe"}, 422),
        ("PUT", "/v1/items/x", {"attributes": {"item_id": "y"}}, 422),
        ("POST", "/v1/events", {"user_id": "u"}, 422),
        ("POST", "/v1/events:batch", {"events": []}, 422),
        ("DELETE", "/v1/items/x", None, 405),
    ]
    for method, path, body, status in cases:
        resp = api.http.request(method, api.url + path, json=body, headers={"X-API-Key": KEY})
        assert resp.status_code == status, (method, path, resp.text)
        error = resp.json()["error"]
        assert error["message"] and "Traceback" not in resp.text
        if status == 422:
            assert error["fields"] and all(f["field"] and f["message"] for f in error["fields"])


def test_keys_and_operations_endpoints(api: Api) -> None:
    event = {"event_id": "0b7e4f0c-3c57-4c43-9d0e-2f1f5a2b9c11", "user_id": "u", "item_id": "i", "type": "click",
             "ts": 1_700_000_000_000}
    assert api.http.post(api.url + "/v1/events", json=event).status_code == 401
    assert api.http.post(api.url + "/v1/events", json=event, headers={"X-API-Key": "wrong"}).status_code == 403
    assert api.http.put(api.url + "/v1/items/i", json={}).status_code == 401
    assert api.get("/v1/trending").status_code == 200  # reads are open by default
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model_version"] == current_version(api.store)
    metrics = api.get("/metrics").text
    assert f'streamrec_api_model_info{{version="{current_version(api.store)}"}} 1.0' in metrics
    assert 'streamrec_api_request_duration_seconds_bucket{le="0.005",method="GET",' \
           'route="/v1/users/{user_id}/recommendations",status="200"}' in metrics
