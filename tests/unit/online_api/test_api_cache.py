"""The in-memory model view: folded-in items, catalogue resolution, and catalogue writes winning races."""

from __future__ import annotations

import time

import numpy as np

from online_api.cache import ModelCache, build_model
from streamrec.settings import Settings
from streamrec.store import to_bytes


def test_new_items_are_appended_once_and_bad_vectors_skipped() -> None:
    y = np.arange(12, dtype=np.float32).reshape(3, 4)
    new = {b"n1": to_bytes(np.ones(4)), b"a": to_bytes(np.zeros(4)), b"bad": b"\x00" * 12}
    m = build_model("v", {}, ["a", "b", "c"], y, y.T @ y, new)
    assert m.item_ids == ["a", "b", "c", "n1"] and m.n_base == 3
    assert m.index["n1"] == 3
    np.testing.assert_array_equal(m.factors[3], np.ones(4))
    np.testing.assert_array_equal(m.factors[:3], y)  # the refit's row for "a" is kept
    np.testing.assert_allclose(np.linalg.norm(m.normed, axis=1), 1.0, rtol=1e-6)


def test_view_resolves_catalogue_and_trending_onto_the_model() -> None:
    y = np.eye(4, dtype=np.float32)
    cache = ModelCache(Settings())
    view = cache.publish(model=build_model("v", {}, ["a", "b", "c", "d"], y, y, {}),
                         catalogue={"a": "x", "c": "x", "b": "y", "zz": "x"}, unavailable=frozenset({"b", "zz"}),
                         trending=[("c", 4.0), ("zz", 3.0), ("a", 2.0)])
    assert view.unavailable_idx.tolist() == [1]
    assert view.available_mask is not None and view.available_mask.tolist() == [True, False, True, True]
    assert {c: v.tolist() for c, v in view.category_idx.items()} == {"x": [0, 2], "y": [1]}
    assert dict(zip(view.trend_idx.tolist(), view.trend_val.tolist(), strict=True)) == {2: 1.0, 0: 0.5}


def test_a_catalogue_write_is_immediate_and_survives_a_stale_refresh() -> None:
    y = np.eye(2, dtype=np.float32)
    cache = ModelCache(Settings())
    cache.publish(model=build_model("v", {}, ["a", "b"], y, y, {}), catalogue={}, unavailable=frozenset())
    stale_read = time.monotonic()
    time.sleep(0.1)
    cache.mark_item("a", "shoes", available=False)
    assert "a" in cache.view.unavailable and cache.view.category_idx["shoes"].tolist() == [0]
    # A refresh whose Redis read started before the write must not bring the item back...
    cache.publish(catalogue={}, unavailable=frozenset(), read_at=stale_read)
    assert "a" in cache.view.unavailable and "shoes" in cache.view.category_idx
    # ...while a later write (from any process, seen by a later refresh) wins.
    time.sleep(0.1)
    cache.publish(catalogue={"a": "hats"}, unavailable=frozenset(), read_at=time.monotonic())
    assert "a" not in cache.view.unavailable and cache.view.category_idx["hats"].tolist() == [0]
