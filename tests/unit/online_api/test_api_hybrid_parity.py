"""API = evaluation: one user state fed to the API's hybrid path and to the evaluation's (build_inputs) gives
the same list, scores and sources, with the blend and with a learned ranker; items outside the model rank
too; filters hold."""

from __future__ import annotations

import numpy as np
import pytest

from models.learned_ranker import FEATURES, LearnedRanker, Query, fit_ranker
from models.ranking import RankingConfig, Signal, UserState, build_inputs, rank
from online_api.cache import ModelCache, View, build_model
from online_api.hybrid import Request, hybrid_inputs, parse_reply, ranked_items, shop_signals
from online_api.hybrid_service import blend
from streamrec.settings import Settings
from streamrec.store.covisitation import parse_neighbours

N, F, NOW = 300, 8, 1_700_000_000_000
HALF_LIFE_S, TOP_N = 3_600.0, 50
NEW = ["new-1", "new-2", "new-3"]  # items the model does not know (only in co-visitation or trending)


def state(seed: int) -> tuple[View, list[tuple[str, float, int]], dict[str, dict[bytes, bytes]], np.ndarray,
                              list[tuple[str, float]], list[tuple[str, float]]]:
    rng = np.random.default_rng(seed)
    ids = [f"i{i}" for i in range(N)]
    y = rng.standard_normal((N, F)).astype(np.float32)
    cache = ModelCache(Settings(redis_url="redis://127.0.0.1:1/0"))
    trending = [(f"i{i}", float(60 - j)) for j, i in enumerate(rng.choice(N, 40, replace=False).tolist())]
    trending.insert(3, ("new-3", 58.5))
    popular = [(f"i{i}", float(100 - j)) for j, i in enumerate(rng.choice(N, 30, replace=False).tolist())]
    stats = np.column_stack([rng.uniform(0, 5, N), rng.uniform(0, 1, N)])
    cache.publish(model=build_model("v1", {}, ids, y, y.T @ y, {}, item_stats=stats), catalogue={i: "c" for i in ids},
                  unavailable=frozenset({"i1", "i2", trending[0][0], "new-2"}), trending=trending, popular=popular)
    hist_items = rng.choice(N, 25).tolist()  # repeats included
    history = [(f"i{i}", float(rng.choice([1.0, 5.0])), NOW - 60_000 * (25 - n)) for n, i in enumerate(hist_items)]
    history.append(("new-1", 1.0, NOW - 1_000))  # the newest item is new since the refit
    hashes: dict[str, dict[bytes, bytes]] = {}
    epoch = NOW - 7_200_000
    for item, _, _ in history[::-1]:
        if item in hashes or len(hashes) == 3:
            continue
        nb = rng.choice(N, 12, replace=False).tolist()
        row = {f"i{j}".encode(): repr(float(rng.uniform(0.1, 5))).encode() for j in nb}
        row |= {b"new-2": b"3.0", b"new-3": b"2.5", b"": str(epoch).encode()}
        hashes[item] = row
    vec = rng.standard_normal(F).astype(np.float32)
    return cache.view, history, hashes, vec, trending, popular


def lua_reply(history: list[tuple[str, float, int]], hashes: dict[str, dict[bytes, bytes]],
              vec: np.ndarray) -> list[object]:
    """What HYBRID_STATE_LUA answers: history newest first joined by \\x1e, no profile, then the session's
    HGETALLs."""
    newest = history[::-1]
    join = "\x1e".join
    flat = [[x for kv in h.items() for x in kv] for h in hashes.values()]
    return [vec.tobytes(), b"1", join(i for i, _, _ in newest).encode(),
            join(f"{w:.6g}" for _, w, _ in newest).encode(), join(str(t) for _, _, t in newest).encode(),
            join(hashes).encode(), None, *flat]


@pytest.fixture(scope="module")
def ranker() -> LearnedRanker:
    """A ranker fitted on random rows (relevance from the history count and the item's repeat rate)."""
    rng = np.random.default_rng(9)
    rows = [rng.random((40, len(FEATURES))) for _ in range(40)]
    return fit_ranker([Query(x, x[:, FEATURES.index("count")] * x[:, -1] > 0.3) for x in rows], 10, threads=1)


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_api_ranks_exactly_as_the_evaluation(seed: int, exclude_seen: bool, learned: bool,
                                                 ranker: LearnedRanker) -> None:
    scorer = ranker if learned else None
    view, history, hashes, vec, trending, popular = state(seed)
    cfg = RankingConfig(exclude_seen=exclude_seen, candidates=40, trending=0.4, popular=0.1)
    req = Request(20, exclude_seen, exclude=["i7"])
    # --- the API's path: the Lua reply parsed, request-local indices for the new items
    reply = parse_reply(lua_reply(history, hashes, vec))
    shop = shop_signals(view, {"trending": trending, "popular": popular})
    inputs, index = hybrid_inputs(view, cfg, reply, NOW, req, shop, (HALF_LIFE_S, TOP_N), vec)
    api = ranked_items(rank(inputs, cfg, req.k, scorer), index)
    # --- the evaluation's path: one global catalogue, model items then the new ones (no factors)
    model = view.model
    assert model is not None
    catalogue = [*model.item_ids, *NEW]
    at = {item: i for i, item in enumerate(catalogue)}
    factors = np.vstack([model.factors, np.zeros((len(NEW), F), dtype=np.float32)])
    usable = np.array([True] * N + [False] * len(NEW))
    items = np.array([at[i] for i, _, _ in history])
    ts = np.array([t for _, _, t in history])
    from models.profile import repeat_profile

    rep = repeat_profile(items, ts, [w for _, w, _ in history], NOW, cfg.repeat_half_life_s)

    def neighbours(i: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = parse_neighbours(hashes.get(catalogue[i], {}), NOW, HALF_LIFE_S, TOP_N)
        return np.array([at[p] for p, _ in pairs], dtype=np.int64), np.array([s for _, s in pairs])

    def sig(ranked: list[tuple[str, float]]) -> Signal:
        return Signal(np.array([at[i] for i, _ in ranked]), np.array([s for _, s in ranked]))

    blocked = np.array(sorted(at[i] for i in view.unavailable | {"i7"}))
    seen = np.unique(items) if exclude_seen else np.zeros(0, dtype=np.int64)
    eval_inputs = build_inputs(UserState(vec, items, ts, Signal(*rep)), NOW, factors, usable, neighbours,
                               {"trending": sig(trending), "popular": sig(popular)}, seen, cfg, blocked,
                               model.item_stats)
    ev = rank(eval_inputs, cfg, req.k, scorer)
    assert [r.item_id for r in api] == [catalogue[i] for i in ev.items.tolist()]
    assert [r.source.value for r in api] == ev.sources
    np.testing.assert_allclose([r.score for r in api], ev.scores, atol=1e-5)
    # what the API must never return, and what it must be able to return
    got = {r.item_id for r in api}
    assert not got & (view.unavailable | {"i7"})
    if not learned:  # the blend's order is known: these must make the list (a random ranker's is not)
        assert "new-3" in got  # only trending and co-visitation know it
        assert {r.source.value for r in api} >= {"covisitation", "personal"}
    if exclude_seen:
        assert not got & {i for i, _, _ in history}


def test_category_keeps_only_its_items() -> None:
    view, history, hashes, vec, trending, popular = state(4)
    cats = {f"i{i}": f"c{i % 3}" for i in range(N)} | {"new-3": "c1"}
    cache = ModelCache(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert view.model is not None
    cache.publish(model=view.model, catalogue=cats, unavailable=view.unavailable, trending=trending, popular=popular)
    cfg = RankingConfig(candidates=40)
    reply = parse_reply(lua_reply(history, hashes, vec))
    inputs, index = hybrid_inputs(cache.view, cfg, reply, NOW, Request(30, True, category="c1"),
                                  shop_signals(cache.view, {"trending": trending, "popular": popular}),
                                  (HALF_LIFE_S, TOP_N), vec)
    got = ranked_items(rank(inputs, cfg, 30), index)
    assert got and all(cats.get(r.item_id) == "c1" for r in got)


def test_a_user_without_signals_gets_trending_and_popular() -> None:
    view, _, _, _, trending, popular = state(5)
    cfg = RankingConfig()
    reply = parse_reply([None, None, b"", b"", b"", b"", None])
    inputs, index = hybrid_inputs(view, cfg, reply, NOW, Request(10, True),
                                  shop_signals(view, {"trending": trending, "popular": popular}), (HALF_LIFE_S, TOP_N),
                                  None)
    got = ranked_items(rank(inputs, cfg, 10), index)
    assert len(got) == 10 and {r.source.value for r in got} <= {"trending", "popular"}
    assert got[0].item_id == next(i for i, _ in trending if i not in view.unavailable)


def test_similar_blend_normalises_and_sums() -> None:
    covis = [("a", 4.0), ("b", 2.0)]
    factors = [("b", 0.9), ("c", 0.45), ("d", -0.2)]
    got = blend(covis, factors, 1.0, 1.0, 10)
    assert got == [("b", 1.5), ("a", 1.0), ("c", 0.5)]
    assert blend(covis, [], 1.0, 1.0, 1) == [("a", 1.0)]
