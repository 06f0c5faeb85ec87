"""Personal ranking follows the documented blend formula; the fallback honours exclusions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.asyncio as aredis

from online_api.cache import ModelCache, build_model
from online_api.metrics import ApiMetrics
from online_api.schemas import Source
from online_api.service import Recommender
from streamrec.settings import Settings

N_ITEMS, F = 300, 8


def make(blend: float, seed: int = 0) -> tuple[Recommender, ModelCache, np.ndarray, list[tuple[str, float]]]:
    rng = np.random.default_rng(seed)
    ids = [f"i{i}" for i in range(N_ITEMS)]
    y = rng.standard_normal((N_ITEMS, F)).astype(np.float32)
    settings = Settings(blend_weight=blend, redis_url="redis://127.0.0.1:1/0")
    cache = ModelCache(settings)
    trending = [(f"i{i}", float(50 - j)) for j, i in enumerate(rng.choice(N_ITEMS, 40, replace=False).tolist())]
    catalogue = {f"i{i}": f"c{i % 3}" for i in range(N_ITEMS)}
    cache.publish(model=build_model("v1", {}, ids, y, y.T @ y, {}), catalogue=catalogue,
                  unavailable=frozenset({"i1", "i2", trending[0][0]}), trending=trending,
                  popular=[(f"i{i}", float(100 - i)) for i in range(20)])
    # The client is never used by the code under test (it only talks to Redis in recommend()).
    svc = Recommender(settings, cache, ApiMetrics(), aredis.Redis.from_url(settings.redis_url))
    return svc, cache, y, trending


def expected(y: np.ndarray, user: np.ndarray, trending: list[tuple[str, float]], w: float,
             banned: set[int], k: int, allowed: set[int] | None = None) -> list[str]:
    """The blend formula of docs/api.md, computed densely in float64."""
    s = y.astype(np.float64) @ user.astype(np.float64)
    t = np.zeros(N_ITEMS)
    for item, score in trending:
        t[int(item[1:])] = score / trending[0][1]
    final = (1 - w) * s / s.max() + w * t
    order = [i for i in np.argsort(-final, kind="stable").tolist()
             if i not in banned and (allowed is None or i in allowed)]
    return [f"i{i}" for i in order[:k]]


@pytest.mark.parametrize("blend", [0.0, 0.2, 0.7])
def test_personal_ranking_is_the_blend_formula(blend: float) -> None:
    svc, cache, y, trending = make(blend)
    view = cache.view
    rng = np.random.default_rng(1)
    for _ in range(20):
        user = rng.standard_normal(F).astype(np.float32)
        if (y @ user).max() <= 0:
            continue
        got = svc._personal(view, user, 10, ["i5", "i7"], None, ["i9"])
        banned = {1, 2, int(trending[0][0][1:]), 5, 7, 9}
        assert [r.item_id for r in got] == expected(y, user, trending, blend, banned, 10)
        scores = [r.score for r in got]
        assert scores == sorted(scores, reverse=True) and all(s <= 1.0 + 1e-6 for s in scores)
        for r in got:  # labelled trending exactly when the trending term is the larger one
            t = dict(trending).get(r.item_id, 0.0) / trending[0][1]
            assert (r.source is Source.TRENDING) == (blend * t > r.score - blend * t)


def test_category_filter_keeps_only_that_category() -> None:
    svc, cache, y, trending = make(0.2)
    user = np.ones(F, dtype=np.float32)
    got = svc._personal(cache.view, user, 15, [], "c1", [])
    assert len(got) == 15 and all(int(r.item_id[1:]) % 3 == 1 for r in got)
    banned = {1, 2, int(trending[0][0][1:])}
    assert [r.item_id for r in got] == expected(y, user, trending, 0.2, banned, 15,
                                                allowed={i for i in range(N_ITEMS) if i % 3 == 1})
    assert svc._personal(cache.view, user, 5, [], "no-such-category", []) == []


def test_a_zero_vector_is_not_personal() -> None:
    svc, cache, _, _ = make(0.2)
    assert svc._personal(cache.view, np.zeros(F, dtype=np.float32), 5, [], None, []) == []


def test_fallback_is_trending_then_popular_without_excluded_items() -> None:
    svc, cache, _, trending = make(0.2)
    view = cache.view
    skip = {trending[1][0]}
    got = asyncio.run(svc._fallback(view, 60, None, skip))
    ids = [r.item_id for r in got]
    want_trending = [i for i, _ in trending if i not in view.unavailable and i not in skip]
    assert ids[: len(want_trending)] == want_trending
    assert all(r.source is Source.TRENDING for r in got[: len(want_trending)])
    rest = got[len(want_trending):]
    assert rest and all(r.source is Source.POPULAR for r in rest)
    assert len(ids) == len(set(ids)) and not (set(ids) & (view.unavailable | skip))
    # fallback scores are normalised by the list's top score (trending[0], unavailable but still the max)
    assert got[0].item_id == trending[2][0]
    assert got[0].score == pytest.approx(trending[2][1] / trending[0][1], abs=1e-6)
