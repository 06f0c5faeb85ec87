"""The hybrid's ``content`` source in the API ("new arrivals like what you buy") is the evaluation's
:func:`models.cold_start.content_signal` on the same rows, over the model's indices, and ranks the same."""

from __future__ import annotations

import numpy as np

from models.cold_start import content_signal
from models.content import ContentConfig, fit_featurizer, normalized_rows
from models.ranking import RankingConfig, Signal, UserState, build_inputs, rank
from online_api.cache import ModelCache, build_model
from online_api.content import ContentService, ContentView
from online_api.hybrid import Request, hybrid_inputs, parse_reply, ranked_items, shop_signals
from streamrec.settings import Settings
from streamrec.store.content import ContentPart

BASE, NEW, F, NOW = 30, 4, 8, 1_700_000_000_000
CATS = ("tea", "coffee", "soap")


def _world() -> tuple[ModelCache, ContentService, list[str]]:
    rng = np.random.default_rng(3)
    ids = [f"i{i}" for i in range(BASE)]
    new = [f"new-{c}" for c in CATS] + ["new-other"]
    cat = {f"i{i}": CATS[i % 3] for i in range(BASE)} | {f"new-{c}": c for c in CATS} | {"new-other": "toys"}
    y = rng.standard_normal((BASE, F)).astype(np.float32)
    vectors = {item.encode(): rng.standard_normal(F).astype(np.float32).tobytes() for item in new}
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    cache = ModelCache(settings)
    cache.publish(model=build_model("v1", {}, ids, y, y.T @ y, vectors), catalogue=cat, unavailable=frozenset(),
                  trending=[("i5", 3.0), ("i6", 2.0)], popular=[("i7", 9.0)])
    # the content view lists the items in another order than the model (rows are by catalogue writes)
    records = {item: {"category": c, "title": f"{c} item"} for item, c in sorted(cat.items(), reverse=True)}
    order = list(records)
    featurizer = fit_featurizer(list(records.values()), ContentConfig())
    rows = normalized_rows(featurizer.transform(list(records.values())))
    svc = ContentService(settings, None)  # type: ignore[arg-type]  # arrivals reads no Redis
    svc.view = ContentView("v1", 0, ContentPart(featurizer, None), None, order, {i: n for n, i in enumerate(order)},
                           rows, np.ones(len(order), dtype=np.bool_))
    return cache, svc, order


def test_arrivals_are_the_new_items_most_like_the_history_with_the_cores_scores() -> None:
    cache, svc, order = _world()
    model = cache.view.model
    assert model is not None and model.n_base == BASE
    history = ["i0", "i3", "i6", "i1"]  # three teas, one coffee
    got = svc.arrivals(model, history, 10)
    assert got is not None
    names = [model.item_ids[i] for i in got.idx.tolist()]
    assert names[:2] == ["new-tea", "new-coffee"] and "new-other" not in names[:3]
    assert all(i >= model.n_base for i in got.idx.tolist())  # only items new since the refit
    # the same numbers as the core on the content view's own rows
    view = svc.view
    assert view is not None
    rows_new = np.array(sorted(view.index[model.item_ids[m]] for m in range(BASE, BASE + NEW)))
    ref = content_signal(view.normed, rows_new, np.array([view.index[h] for h in history]), 10)
    assert [order[r] for r in ref.idx.tolist()] == names
    np.testing.assert_allclose(got.score, ref.score)
    assert svc.arrivals(model, [], 10) is None  # no history: no source


def test_the_api_ranks_with_the_content_source_as_the_evaluation() -> None:
    cache, svc, _ = _world()
    view = cache.view
    model = view.model
    assert model is not None
    history = [("i0", 1.0, NOW - 3_000), ("i3", 1.0, NOW - 2_000), ("i6", 1.0, NOW - 1_000)]
    newest = history[::-1]
    reply = parse_reply([None, None, "\x1e".join(i for i, _, _ in newest).encode(),
                         "\x1e".join(f"{w:g}" for _, w, _ in newest).encode(),
                         "\x1e".join(str(t) for _, _, t in newest).encode(), b"", None])
    cfg = RankingConfig(exclude_seen=True, personal=0.0, covisitation=0.0, repeat=0.0, trending=0.1, popular=0.1,
                        content=1.0)
    arrivals = svc.arrivals(model, reply.items, cfg.candidates)
    shop = shop_signals(view, {"trending": [("i5", 3.0), ("i6", 2.0)], "popular": [("i7", 9.0)]})
    inputs, index = hybrid_inputs(view, cfg, reply, NOW, Request(5, True), shop, (3_600.0, 50), None, None, arrivals)
    api = ranked_items(rank(inputs, cfg, 5), index)
    assert api[0].item_id == "new-tea" and api[0].source.value == "content"
    items = np.array([model.index[i] for i, _, _ in history])
    ts = np.array([t for _, _, t in history])
    user = UserState(None, items, ts, Signal.empty())
    shop_eval = {"trending": Signal(np.array([5, 6]), np.array([3.0, 2.0])), "popular": Signal(np.array([7]),
                                                                                          np.array([9.0]))}
    ev = rank(build_inputs(user, NOW, None, None, lambda i: (np.zeros(0, dtype=np.int64), np.zeros(0)), shop_eval,
                           np.unique(items), cfg, content=arrivals), cfg, 5)
    assert [r.item_id for r in api] == [model.item_ids[i] for i in ev.items.tolist()]
    assert [r.source.value for r in api] == ev.sources
