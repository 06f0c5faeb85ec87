"""Both lanes of online_api.retrieval (the item index, the exact scan) answer the same; filters never leak
through the index lane; items folded in since the build are found; the index builds off the caller's thread."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import redis.asyncio as aredis
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ann import AnnParams, ItemIndexes
from online_api.cache import ModelCache, View, build_model
from online_api.hybrid import personal_signal
from online_api.index_build import IndexBuilder
from online_api.metrics import ApiMetrics
from online_api.retrieval import personal_top, similar_top
from online_api.service import Recommender
from streamrec.settings import Settings
from streamrec.store import to_bytes

N, F = 800, 16
EXHAUSTIVE = AnnParams(factory="IVF8,Flat", search="nprobe=8", min_fetch=50)
APPROX = AnnParams(factory="IVF8,Flat", search="nprobe=2", min_fetch=30, max_fetch=300)


def factors(seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, F)).astype(np.float32)
    y = centres[rng.integers(0, 10, n)] + 0.5 * rng.standard_normal((n, F)).astype(np.float32)
    return (y * rng.lognormal(0, 0.3, (n, 1))).astype(np.float32)


def views(seed: int, params: AnnParams = EXHAUSTIVE, new: int = 0,
          unavailable: frozenset[str] | None = None) -> tuple[View, View, Recommender, np.ndarray]:
    """The same state twice: without an index and with one; plus a service and the factors."""
    rng = np.random.default_rng(seed)
    y = factors(seed)
    ids = [f"i{i}" for i in range(N)]
    folded = {f"new{j}".encode(): to_bytes(rng.standard_normal(F).astype(np.float32) * 3) for j in range(new)}
    catalogue = {f"i{i}": f"c{i % 4}" for i in range(N)}
    trending = [(f"i{i}", float(50 - j)) for j, i in enumerate(rng.choice(N, 30, replace=False).tolist())]
    unavailable = unavailable if unavailable is not None else frozenset(f"i{i}" for i in range(0, N, 17))
    out = []
    settings = Settings(redis_url="redis://127.0.0.1:1/0", api_hybrid=False)
    for ann in (None, ItemIndexes.build(y, replace(params, mips=True), params)):
        cache = ModelCache(settings)
        cache.publish(model=build_model("v1", {}, ids, y, y.T @ y, folded, ann), catalogue=catalogue,
                      unavailable=unavailable, trending=trending, popular=[])
        out.append(cache.view)
    svc = Recommender(settings, ModelCache(settings), ApiMetrics(), aredis.Redis.from_url(settings.redis_url))
    return out[0], out[1], svc, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_index_lane_and_the_scan_lane_answer_the_same(seed: int) -> None:
    plain, indexed, svc, _ = views(seed, new=5)
    assert plain.model is not None and plain.model.ann is None
    assert indexed.model is not None and indexed.model.ann is not None and indexed.model.normed is None
    rng = np.random.default_rng(seed + 10)
    for _ in range(15):
        vec = rng.standard_normal(F).astype(np.float32)
        drop = rng.choice(N + 5, 25, replace=False).astype(np.int64)
        usable = rng.random(N + 5) > 0.3 if rng.random() < 0.5 else None
        for n in (10, 100):
            a, b = personal_top(plain, vec, n, drop, usable), personal_top(indexed, vec, n, drop, usable)
            assert a[0].tolist() == b[0].tolist()
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)
        sa, sb = personal_signal(plain, vec, 50, drop, None), personal_signal(indexed, vec, 50, drop, None)
        assert sa.idx.tolist() == sb.idx.tolist()
        seen = [f"i{i}" for i in rng.choice(N, 15).tolist()]
        for category in (None, "c1"):
            ra = svc._personal(plain, vec, 10, seen, category, ["i3", "new1"])
            rb = svc._personal(indexed, vec, 10, seen, category, ["i3", "new1"])
            assert [(r.item_id, r.source) for r in ra] == [(r.item_id, r.source) for r in rb]
            np.testing.assert_allclose([r.score for r in ra], [r.score for r in rb], atol=2e-6)
        item = int(rng.integers(N + 5))
        a, b = similar_top(plain, item, 10), similar_top(indexed, item, 10)
        assert a[0].tolist() == b[0].tolist()
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-5)


def test_items_folded_in_since_the_build_are_found() -> None:
    _, indexed, svc, _ = views(3, params=APPROX, new=3)
    model = indexed.model
    assert model is not None and model.ann is not None and model.ann.n_indexed == N
    target = model.index["new2"]
    vec = model.factors[target] / np.linalg.norm(model.factors[target])
    best, _ = personal_top(indexed, (vec * 10).astype(np.float32), 10, np.zeros(0, dtype=np.int64), None)
    assert target in best.tolist()
    assert "new2" in [r.item_id for r in svc._personal(indexed, (vec * 10).astype(np.float32), 10, [], None, [])]
    sims, _ = similar_top(indexed, target, 5)
    assert target not in sims.tolist()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 5_000), k=st.integers(1, 40), off=st.integers(0, 400), n_excl=st.integers(0, 60),
       category=st.sampled_from([None, "c0", "c3", "nope"]))
def test_filters_never_leak_through_the_index(seed: int, k: int, off: int, n_excl: int,
                                              category: str | None) -> None:
    rng = np.random.default_rng(seed)
    unavailable = frozenset(f"i{i}" for i in rng.choice(N, off, replace=False).tolist())
    plain, indexed, svc, _ = views(seed % 7, params=APPROX, new=2, unavailable=unavailable)
    vec = rng.standard_normal(F).astype(np.float32)
    exclude = [f"i{i}" for i in rng.choice(N, n_excl, replace=False).tolist()]
    seen = [f"i{i}" for i in rng.choice(N, 10).tolist()]
    got = svc._personal(indexed, vec, k, seen, category, exclude)
    ids = [r.item_id for r in got]
    assert not set(ids) & (unavailable | set(exclude) | set(seen))
    if category is not None:
        assert all(int(i[1:]) % 4 == int(category[1:]) for i in ids) if category != "nope" else not ids
    assert len(ids) == len(svc._personal(plain, vec, k, seen, category, exclude))  # never shorter
    sims, _ = similar_top(indexed, int(rng.integers(N)), k)
    assert indexed.available_mask is not None and indexed.available_mask[sims].all()


def test_the_builder_builds_off_the_callers_thread_and_skips_small_or_broken_versions() -> None:
    y = factors(4, 3_000)
    builder = IndexBuilder(Settings(api_ann_min_items=1_000))
    assert builder.index_for("v1", y) == (None, False)  # started, not ready
    deadline = time.monotonic() + 60
    while (got := builder.index_for("v1", y)) == (None, False) and time.monotonic() < deadline:
        time.sleep(0.05)
    index, ready = got
    assert ready and index is not None and index.n_indexed == 3_000
    assert builder.index_for("small", y[:999]) == (None, True)
    assert IndexBuilder(Settings(api_ann=False)).index_for("v1", y) == (None, True)
    broken = IndexBuilder(Settings(api_ann_min_items=1_000, api_ann_similar_index="NoSuchIndex"))
    assert broken.index_for("v2", y) == (None, False)
    while (got := broken.index_for("v2", y)) == (None, False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == (None, True) and not broken.wanted("v2", 3_000)  # served exactly, not rebuilt every tick
    builder.close()
    broken.close()
