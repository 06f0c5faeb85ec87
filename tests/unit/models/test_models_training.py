"""train_als wraps implicit's CPU ALS and hands back plain, well-formed numpy arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp

from models.training import ALSModelFactors, ALSParams, to_implicit, train_als


def test_shapes_dtypes_and_gram(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, matrix = random_model
    assert model.user_factors.shape == (matrix.shape[0], 64)
    assert model.item_factors.shape == (matrix.shape[1], 64)
    for arr in (model.user_factors, model.item_factors, model.gram, model.user_gram):
        assert arr.dtype == np.float32 and arr.flags.c_contiguous and np.isfinite(arr).all()
    y = model.item_factors.astype(np.float64)
    np.testing.assert_allclose(model.gram, y.T @ y, rtol=1e-4, atol=1e-3)
    assert model.fit_seconds > 0 and model.nnz == matrix.nnz
    assert (model.n_users, model.n_items, model.factors) == (*matrix.shape, 64)


def test_deterministic_for_a_seed(make_random_weights: Callable[..., sp.csr_matrix]) -> None:
    matrix = make_random_weights(np.random.default_rng(1), 100, 200, 30)
    params = ALSParams(factors=8, iterations=3, random_state=5, num_threads=1)
    a, b = train_als(matrix, params), train_als(matrix, params)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)


def test_learns_the_checkerboard(checkerboard_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    """Like implicit's test_recommend: each user's best unseen item is the withheld diagonal."""
    model, matrix = checkerboard_model
    scores = model.user_factors @ model.item_factors.T
    scores[matrix.nonzero()] = -np.inf
    np.testing.assert_array_equal(scores.argmax(axis=1), np.arange(50))


def test_to_implicit_carries_params(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    ref = to_implicit(model)
    assert ref.alpha == 2.0 and ref.regularization == 0.1 and ref.factors == 64
    np.testing.assert_array_equal(ref.item_factors, model.item_factors)
    assert ref.item_factors is not model.item_factors


def test_param_validation() -> None:
    with pytest.raises(ValueError):
        ALSParams(factors=0)
    with pytest.raises(ValueError):
        ALSParams(alpha=0.0)
    with pytest.raises(ValueError):
        train_als(sp.csr_matrix((0, 5)), ALSParams())
