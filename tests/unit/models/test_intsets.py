"""models.intsets answers exactly what np.unique / np.union1d answer."""

from __future__ import annotations

import numpy as np
import pytest

from models.intsets import distinct, union


@pytest.mark.parametrize("n", [0, 1, 2, 7, 200, 5_000])
def test_distinct_and_union_equal_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    for dtype in (np.int64, np.int32, np.float64):
        a = rng.integers(-5, max(n // 3, 1), n).astype(dtype)
        b = rng.integers(0, 50, n // 2).astype(dtype)
        got, want = distinct(a), np.unique(a)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        got, want = union(a, b), np.union1d(a, b)
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_union_promotes_as_numpy_does_and_takes_any_number_of_parts() -> None:
    ints = np.array([3, 1, 3], dtype=np.int64)
    assert union(ints, []).dtype == np.union1d(ints, []).dtype  # an empty list is float64, as in numpy
    assert union(ints, np.array([2], dtype=np.int64), np.array([1, 9])).tolist() == [1, 2, 3, 9]
    empty = np.zeros(0, dtype=np.int64)
    assert union(empty).tolist() == [] and distinct(empty).tolist() == [] and distinct(empty).dtype == np.int64
