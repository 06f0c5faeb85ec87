"""Cold start on real Kafka and Redis: a simulated shop with a catalogue and profiles, refitted by the real
batch job and served by a real API process. A new item put with metadata is in ``similar?kind=content``
and in the recommendations of users who like its category within a second, before anyone clicked it; a
new user with a profile gets personalised answers; deleting a user leaves no key or field about them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from batch.refit import run_refit
from online_api.server import ApiProcess
from streamrec import simulate
from streamrec.kafka_io import EventProducer, ensure_topics
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.catalog import put_items
from streamrec.store.content import put_profile, read_neighbours
from streamrec.store.models import all_user_vectors, current_version, get_user_vectors
from tests.helpers import polling
from tests.helpers.processes import Started
from tests.integration.services import isolated_settings

poll = partial(polling.poll, interval_s=0.02)  # the bars here are within a second

KEY = "cold-start-key-0123456789"
SHOP = simulate.SimConfig(seed=11, users=300, items=240, categories=4, new_item_every=10**9)


@dataclass
class Shop:
    settings: Settings
    store: RedisStore
    world: simulate.Storefront
    http: httpx.Client
    summary: dict[str, Any]

    def favourite(self, user: str) -> str:
        shares = np.diff([0.0, *self.world.taste[user]])
        return self.world.category_names[int(np.argmax(shares))]

    def fans_of(self, category: str, active: set[str]) -> list[str]:
        """Users with a vector whose taste is mostly ``category``."""
        return [u for u in self.world.users if u in active and self.favourite(u) == category
                and np.diff([0.0, *self.world.taste[u]]).max() > 0.8]

    def category_of(self, item: str) -> str | None:
        return self.world.item_category.get(item)


def entry(item: str, category: str, n: int, price: float) -> dict[str, Any]:
    noun = simulate._NOUN.get(category, "item")
    return {"item_id": item, "category": category, "title": f"{noun} {n}", "brand": f"{category}-works",
            "price": price}


@pytest.fixture(scope="module")
def shop(endpoints: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    snapshot: Path = tmp_path_factory.mktemp("cold-snapshot")
    settings = isolated_settings(*endpoints, api_keys=KEY, batch_snapshot_dir=snapshot, als_factors=16,
                                 als_iterations=8, content_min_interactions=3, profile_fade_events=10)
    ensure_topics(settings)
    store = RedisStore(settings)
    world = simulate.Storefront(SHOP)
    producer = EventProducer(settings)
    simulate.run(producer.send, rate=0, count=9_000, store=world)
    assert producer.flush(30) == 0
    put_items(store, [entry(i, c, n, world.item_price[i]) for n, (i, c) in enumerate(world.item_category.items())])
    for user in world.users[:200]:  # profiles of the older users: what the regression learns from
        shares = np.diff([0.0, *world.taste[user]])
        put_profile(store, user, {"segment": world.category_names[int(np.argmax(shares))], "age": 20 + len(user)})
    summary = run_refit(settings, store)
    try:
        with ApiProcess(settings) as api, httpx.Client(base_url=api.url, headers={"X-API-Key": KEY},
                                                        timeout=10) as http:
            api.wait_for("/readyz")
            yield Shop(settings, store, world, http, summary)
    finally:
        store.delete_prefix()
        store.close()


def test_the_refit_publishes_both_regressions_without_pickles(shop: Shop) -> None:
    s, k = shop.summary, shop.store.keys
    assert s["content_items"] == len(shop.world.item_category) and s["content_training_items"] >= 100, s
    assert s["profiles"] == 200 and s["profile_training_users"] >= 50, s
    version = current_version(shop.store)
    assert version == s["version"]
    for part in ("content", "profile"):
        meta = json.loads(shop.store.client.get(k.model(version, f"{part}_model")))  # JSON, never a pickle
        coef = shop.store.client.get(k.model(version, f"{part}_coef"))
        assert len(coef) == 4 * (meta["n_features"] + 1) * 16  # raw float32, intercept last
    assert shop.store.client.hlen(k.model(version, "content_features")) == len(shop.world.item_category)
    published = read_neighbours(shop.store, version)  # every item's content neighbours, raw arrays
    assert published is not None and published[0] == sorted(shop.world.item_category)
    assert published[1].idx.shape == (len(shop.world.item_category), Settings().covis_top_n)


def test_a_new_item_with_metadata_is_recommended_and_has_content_neighbours_at_once(shop: Shop) -> None:
    category = shop.world.category_names[0]
    fresh = f"new-{uuid.uuid4().hex[:6]}"
    body = {"category": category, "attributes": {"title": f"{simulate._NOUN[category]} deluxe",
                                                 "brand": f"{category}-works", "price": 50.0}}
    active = set(all_user_vectors(shop.store, shop.summary["version"]))
    fans = shop.fans_of(category, active)[:8]
    assert len(fans) >= 3
    assert shop.http.get(f"/v1/items/{fresh}/similar", params={"kind": "content"}).status_code == 404

    assert shop.http.put(f"/v1/items/{fresh}", json=body).status_code == 200
    t0 = time.monotonic()

    def similar() -> list[str]:
        resp = shop.http.get(f"/v1/items/{fresh}/similar", params={"kind": "content", "k": 10})
        return [i["item_id"] for i in resp.json()["items"]] if resp.status_code == 200 else []

    neighbours, _ = poll(similar, bool, 1.0)
    assert time.monotonic() - t0 <= 1.0 and len(neighbours) == 10, neighbours
    assert all(shop.category_of(i) == category for i in neighbours), neighbours

    def recommended(user: str) -> bool:
        items = shop.http.get(f"/v1/users/{user}/recommendations", params={"k": 20}).json()["items"]
        return fresh in [i["item_id"] for i in items]

    _, waited = poll(lambda: recommended(fans[0]), bool, 1.0)
    assert waited <= 1.0
    hits = sum(recommended(u) for u in fans)
    assert hits >= len(fans) * 3 // 4, (hits, len(fans))
    others = [u for c in shop.world.category_names[1:] for u in shop.fans_of(c, active)[:3]]
    assert sum(recommended(u) for u in others) <= len(others) // 4  # its category's fans, not everyone
    # the catalogue write gave the item a vector of the version's items: every API process and worker reads it
    assert shop.store.client.hexists(shop.store.keys.model(shop.summary["version"], "new_items"), fresh)

    # "New arrivals for you": the new item leads for its category's fans, ahead of one of another category
    far = shop.world.category_names[3]
    other = {"category": far, "attributes": {"title": f"{simulate._NOUN[far]} deluxe", "brand": f"{far}-works"}}
    assert shop.http.put(f"/v1/items/{fresh}-other", json=other).status_code == 200
    poll(lambda: shop.http.get("/v1/users/nobody-at-all/new-arrivals").json()["items"], lambda i: len(i) == 2, 1.0)
    arrivals = shop.http.get(f"/v1/users/{fans[0]}/new-arrivals", params={"k": 5}).json()
    assert arrivals["personalized"] is True and [(i["item_id"], i["source"]) for i in arrivals["items"]] == [
        (fresh, "personal"), (f"{fresh}-other", "personal")], arrivals
    anonymous = shop.http.get("/v1/users/nobody-at-all/new-arrivals").json()
    assert anonymous["personalized"] is False and fresh in [i["item_id"] for i in anonymous["items"]]
    assert {i["source"] for i in anonymous["items"]} == {"popular"} and len(anonymous["items"]) == 2

    # A visitor who viewed only the new item: no co-visitation exists (no worker runs here), so its content
    # neighbours stand in as the co-visitation candidates, all of its category.
    session = shop.http.post("/v1/recommendations", json={"items": [fresh], "k": 10}).json()
    from_content = [i["item_id"] for i in session["items"] if i["source"] == "covisitation"]
    assert len(from_content) >= 3 and all(shop.category_of(i) == category for i in from_content), session


def test_a_new_user_with_a_profile_gets_personalised_answers(shop: Shop) -> None:
    category = shop.world.category_names[1]
    user, stranger = f"newcomer-{uuid.uuid4().hex[:6]}", f"stranger-{uuid.uuid4().hex[:6]}"
    resp = shop.http.put(f"/v1/users/{user}/profile", json={"attributes": {"segment": category, "age": 25}})
    assert resp.status_code == 200, resp.text
    assert shop.http.get(f"/v1/users/{user}/profile").json()["attributes"] == {"segment": category, "age": 25}
    got = shop.http.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert got["personalized"] is True, got
    in_category = [shop.category_of(i["item_id"]) == category for i in got["items"]]
    assert sum(in_category) >= 7, got  # the segment's items, not the shop's trending ones
    plain = shop.http.get(f"/v1/users/{stranger}/recommendations", params={"k": 10}).json()
    assert plain["personalized"] is False
    # bad profiles are a 422 that says why, never a 500
    bad = shop.http.put(f"/v1/users/{user}/profile", json={"attributes": {"nested": {"a": 1}}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert shop.http.put(f"/v1/users/{user}/profile", json={"attributes": {}}, headers={"X-API-Key": "wrong"}
                         ).status_code in (401, 403)


def test_an_imported_catalogue_is_featurized_with_the_serving_content_model(shop: Shop, tmp_path: Path) -> None:
    from ops.catalog_import import ColumnMap, import_catalogue

    category = shop.world.category_names[2]
    noun = simulate._NOUN[category]
    path = tmp_path / "new.csv"
    path.write_text("sku,category,title,price\n" + "".join(f"imp-{n},{category},{noun} import {n},{10 + n}\n"
                                                            for n in range(3)))
    report = import_catalogue(shop.settings, path, ColumnMap(id="sku"), progress=False)
    assert (report.accepted, report.featurized) == (3, 3)
    version = shop.summary["version"]
    assert shop.store.client.hexists(shop.store.keys.model(version, "new_items"), "imp-0")
    got, _ = poll(lambda: shop.http.get("/v1/items/imp-0/similar", params={"kind": "content", "k": 5}), lambda r:
                  r.status_code == 200, 2.0)
    ids = [i["item_id"] for i in got.json()["items"]]
    assert {"imp-1", "imp-2"} <= set(ids) and all(shop.category_of(i) in (category, None) for i in ids), ids


def test_deleting_a_user_removes_every_key_and_field(shop: Shop) -> None:
    store, k = shop.store, shop.store.keys
    version = shop.summary["version"]
    user = next(u for u in shop.world.users[:200] if get_user_vectors(store, version, [u])[0] is not None
                and store.client.exists(k.history(u)) == 0)  # a profiled user with a vector (no worker runs here)
    store.client.rpush(k.history(user), f"i1\x1f1\x1f{int(time.time() * 1000)}\x1fclick")
    store.client.hset(k.user_events(k.partition(user)), user, 1)
    store.client.rpush(k.pending(version, "someitem"), f"{user}\x1f1", "other\x1f1")
    store.client.hset(k.model(version, "pending_n"), "someitem", 2)

    def traces() -> list[str]:
        found = []
        for key in store.client.scan_iter(f"{k.prefix}:*", count=5_000):
            name = key.decode()
            if name == k.erased:  # the list of deleted users the next refit drops (checked below)
                continue
            if user in name.split(":") or f"{{{user}}}" in name:
                found.append(name)
            kind = store.client.type(key)
            if kind == b"hash" and store.client.hexists(key, user):
                found.append(f"{name}[{user}]")
            elif kind == b"list" and any(e.split(b"\x1f")[0] == user.encode() for e in store.client.lrange(key, 0, -1)):
                found.append(f"{name} entry")
        return found

    assert len(traces()) >= 5
    resp = shop.http.delete(f"/v1/users/{user}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["removed"] == {"profile": 1, "history": 1, "event_count": 1, "vectors": 1, "pending": 1}
    assert traces() == []
    assert store.client.lrange(k.pending(version, "someitem"), 0, -1) == [b"other\x1f1"]
    assert shop.http.get(f"/v1/users/{user}/recommendations").json()["personalized"] is False
    assert shop.http.delete(f"/v1/users/{user}").json()["removed"]["profile"] == 0  # idempotent

    # The refit's snapshot still held the user's interactions: the next refit drops them for good.
    assert store.client.hexists(k.erased, user)
    summary = run_refit(shop.settings, store)
    assert get_user_vectors(store, summary["version"], [user]) == [None]
    assert not store.client.hexists(k.erased, user) and traces() == []
    from batch import snapshot as snapshots

    assert user not in snapshots.load(shop.settings.snapshot_dir, shop.settings.event_topics, None).users


def test_the_worker_blends_a_new_items_fold_in_with_its_content_vector(shop: Shop, procs: Started) -> None:
    """Runs last: the worker applies the whole topic (the deleted user's old events included)."""
    from online_api.server import free_port
    from stream_processors import new_items as ni
    from streamrec.store import from_bytes

    store, k = shop.store, shop.store.keys
    version = current_version(store)
    assert version is not None
    served, _ = poll(lambda: shop.http.get("/readyz").json()["model_version"], lambda v: v == version, 10)
    assert served == version  # the refit of the deletion test published a new version
    settings = shop.settings.model_copy(update={"worker_web_port": free_port(), "worker_batch_within_s": 0.05})
    category = shop.world.category_names[0]
    item = f"blend-{uuid.uuid4().hex[:6]}"
    body = {"category": category, "attributes": {"title": f"{simulate._NOUN[category]} blend", "price": 20.0}}
    assert shop.http.put(f"/v1/items/{item}", json=body).status_code == 200
    content = store.client.hget(k.model(version, "content_items"), item)
    assert content is not None and store.client.hget(k.model(version, "new_items"), item) == content
    worker = procs.worker(settings, log_level="warning")
    now = int(time.time() * 1000)
    users = sorted(all_user_vectors(store, version))[:3]
    events = [{"event_id": str(uuid.uuid4()), "user_id": u, "item_id": item, "type": "click", "ts": now}
              for u in users]
    assert shop.http.post("/v1/events:batch", json={"events": events}).status_code == 202
    blended, _ = poll(lambda: store.client.hget(k.model(version, "new_items"), item), lambda v: v != content, 60)
    worker.assert_alive()
    assert blended != content, "the worker never folded the item in"
    # what the worker folded, recomputed from the same state: its pending interactions and users' vectors
    pending = [ni.decode_pending(e) for e in store.client.lrange(k.pending(version, item), 0, -1)]
    vectors = dict(zip(users, get_user_vectors(store, version, users), strict=True))
    gram = ni.load_user_gram(store, version, 16)
    folded = ni.fold_items({item: pending}, vectors, gram, settings.als_regularization, settings.als_alpha)[item]
    expect = ni.blend_content({item: folded}, {item: content}, {item: len(pending)},
                              settings.content_prior_interactions)[item]
    np.testing.assert_allclose(from_bytes(blended), expect, rtol=1e-3, atol=1e-4)
    assert not np.allclose(from_bytes(blended), folded, atol=1e-4)  # the metadata still counts
