"""The worker's caches: history arrays, the count-validated LRU, and item-id translation per model."""

from __future__ import annotations

import numpy as np

from models.foldin import fold_in_users, gram
from models.ids import IdMap
from stream_processors.state import ModelState, UserCache, UserState
from streamrec.store.models import ModelVersion
from streamrec.store.users import Interaction


def rows(items: IdMap, *entries: tuple[str, float, int]) -> np.ndarray:
    return np.array([(items.add(i), w, t) for i, w, t in entries], dtype=np.float64).reshape(-1, 3)


def test_history_keeps_order_and_drops_oldest_beyond_cap() -> None:
    items = IdMap()
    redis_order = [Interaction("b", 5.0, 2, "purchase"), Interaction("a", 1.0, 1, "click")]  # newest first
    state = UserState.from_history(2, redis_order, items)
    assert [items.id_of(i) for i in state.items] == ["a", "b"] and state.count == 2
    grown = state.extended(rows(items, ("c", 1.0, 3), ("d", 1.0, 4)), cap=3)
    assert grown.count == 4
    assert [items.id_of(i) for i in grown.items] == ["b", "c", "d"]
    assert grown.weights.tolist() == [5.0, 1.0, 1.0] and grown.ts.tolist() == [2, 3, 4]
    assert UserState.from_history(0, [], items).data.shape == (0, 3)


def test_cache_trusts_only_matching_counts_and_evicts_least_recent() -> None:
    cache = UserCache(max_users=2)
    a, b, c = (UserState(n, np.zeros((n, 3))) for n in (1, 2, 3))
    cache.put_many([("a", a), ("b", b)])
    assert cache.get("a", 1) is a
    assert cache.get("a", 5) is None  # another worker applied events meanwhile
    cache.put_many([("c", c)])  # "b" is the least recently used
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2


def model(n: int = 6, f: int = 4) -> ModelVersion:
    y = np.random.default_rng(0).standard_normal((n, f)).astype(np.float32)
    return ModelVersion("v1", {"factors": f}, [f"i{k}" for k in range(n)], y, gram(y))


def test_rows_translate_interned_ids_including_new_items_after_rebuild() -> None:
    items = IdMap()
    for name in ("zz", "i3", "i0"):
        items.add(name)
    state = ModelState(model(), items, regularization=0.1, alpha=2.0)
    assert state.rows_of(np.array([0, 1, 2], dtype=np.int32)).tolist() == [-1, 3, 0]
    vec = np.ones(4, dtype=np.float32)
    assert state.add_new_items({"zz": vec, "i0": vec}) is True  # i0 is the model's own: ignored
    assert state.new_items.keys() == {"zz"}
    assert state.rows_of(np.array([0], dtype=np.int32)).tolist() == [-1]  # not in the solver yet
    assert state.rebuild_solver_if_due(min_interval_s=3600) is False  # throttled
    assert state.rebuild_solver_if_due(min_interval_s=0) is True
    assert state.rows_of(np.array([0, 1], dtype=np.int32)).tolist() == [6, 3]
    assert state.add_new_items({"zz": vec}) is False  # unchanged
    items.add("late")  # interned after the solver was built
    assert state.rows_of(np.array([3], dtype=np.int32)).tolist() == [-1]


def test_solver_with_new_items_folds_like_the_extended_matrix() -> None:
    m = model()
    items = IdMap()
    state = ModelState(m, items, regularization=0.1, alpha=2.0)
    extra = np.full(4, 0.5, dtype=np.float32)
    state.add_new_items({"new": extra})
    state.rebuild_solver_if_due(0)
    got = state.solver.fold_in([(np.array([0, 6]), np.array([1.0, 5.0]))])
    y = np.vstack([m.item_factors, extra])
    want = fold_in_users(y, m.gram, [(np.array([0, 6]), np.array([1.0, 5.0]))], 0.1, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
