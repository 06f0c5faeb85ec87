"""IdMap: dense indices, unknown handling, exact JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.ids import IdMap


def test_dense_first_seen_order_and_lookup() -> None:
    m = IdMap.from_ids(["b", "a", "b", "c"])
    assert len(m) == 3 and m.ids == ["b", "a", "c"]
    assert m.index("a") == 1 and m.index("zzz") is None
    assert m.add("a") == 1 and m.add("d") == 3 and len(m) == 4
    assert m.id_of(3) == "d" and m.ids_of(np.array([2, 0])) == ["c", "b"]
    assert "c" in m and "x" not in m
    assert m.ids_of([3, 3, 1]) == ["d", "d", "a"] and m.ids_of([]) == []
    for bad in (-1, 4):
        with pytest.raises(IndexError):
            m.id_of(bad)
        with pytest.raises(IndexError):
            m.ids_of(np.array([0, bad]))
    with pytest.raises(TypeError):
        m.add(5)  # type: ignore[arg-type]


def test_indices_mark_unknown_with_minus_one() -> None:
    m = IdMap.from_ids(["x", "y"])
    idx = m.indices(["y", "nope", "x"])
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [1, -1, 0])
    np.testing.assert_array_equal(m.known_mask(["y", "nope"]), [True, False])
    assert m.indices([]).shape == (0,)


def test_json_round_trip_is_exact() -> None:
    tricky = ["u-1", "ünïcödé", "emoji-🛒", 'quote"back\\slash', "tab\tnew\nline", "", " ", "\ud800"]
    m = IdMap.from_ids(tricky)
    text = m.to_json()
    assert json.loads(text)["ids"] == tricky  # plain JSON any reader can use
    back = IdMap.from_json(text)
    assert back == m and back.ids == tricky
    assert [back.index(i) for i in tricky] == list(range(len(tricky)))
    assert IdMap.from_json(text.encode()) == m
    assert IdMap.from_json(IdMap().to_json()) == IdMap()


@pytest.mark.parametrize(
    "payload",
    [
        '{"version": 1, "ids": ["a", "a"]}',
        '{"version": 2, "ids": []}',
        '{"ids": [1]}',
        "[]",
        '{"version": 1, "ids": [1, 2]}',
    ],
)
def test_from_json_rejects_malformed(payload: str) -> None:
    with pytest.raises(ValueError):
        IdMap.from_json(payload)
