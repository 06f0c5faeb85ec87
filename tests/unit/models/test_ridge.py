"""The ridge regression (models/ridge.py) against scikit-learn's Ridge on fixed data, and the blends."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from models.ridge import RidgeModel, blend_by_count, cosine_top, fade_weight, fit_ridge


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_ridge_matches_scikit_learn_on_sparse_features(alpha: float) -> None:
    rng = np.random.default_rng(7)
    x = sp.random(120, 40, density=0.15, random_state=3, format="csr", dtype=np.float64)
    y = rng.normal(size=(120, 8))
    ours = fit_ridge(x, y, alpha)
    ref = Ridge(alpha=alpha, solver="cholesky").fit(x.toarray(), y)
    np.testing.assert_allclose(ours.coef, ref.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.intercept, ref.intercept_, rtol=1e-4, atol=1e-5)
    probe = sp.random(5, 40, density=0.3, random_state=4, format="csr")
    np.testing.assert_allclose(ours.predict(probe), ref.predict(probe.toarray()), rtol=1e-4, atol=1e-5)


def test_ridge_with_more_features_than_rows_and_dense_input() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((10, 30)), rng.normal(size=(10, 4))
    ours = fit_ridge(x, y, 0.5)
    ref = Ridge(alpha=0.5).fit(x, y)
    np.testing.assert_allclose(ours.predict(x), ref.predict(x), rtol=1e-4, atol=1e-5)


def test_ridge_learns_a_linear_map() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 3))
    x = rng.random((500, 6))
    model = fit_ridge(x, x @ w + 0.25, 1e-6)
    np.testing.assert_allclose(model.coef, w, atol=1e-3)
    np.testing.assert_allclose(model.intercept, 0.25, atol=1e-3)


def test_published_array_round_trip() -> None:
    m = RidgeModel(np.arange(12, dtype=np.float32).reshape(4, 3), np.array([1, 2, 3], dtype=np.float32))
    raw = m.to_array().astype("<f4").tobytes()
    back = RidgeModel.from_array(np.frombuffer(raw, dtype="<f4"), 4)
    np.testing.assert_array_equal(back.coef, m.coef)
    np.testing.assert_array_equal(back.intercept, m.intercept)
    with pytest.raises(ValueError):
        fit_ridge(np.zeros((0, 3)), np.zeros((0, 2)), 1.0)


def test_blend_by_count_moves_from_content_to_learnt() -> None:
    content, learnt = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(blend_by_count(content, learnt, 0, 3), content)
    np.testing.assert_allclose(blend_by_count(content, learnt, 3, 3), [0.5, 0.5])
    np.testing.assert_allclose(blend_by_count(content, learnt, 297, 3), [0.01, 0.99])
    np.testing.assert_allclose(blend_by_count(content, learnt, 0, 0), learnt)


def test_fade_weight_is_linear_to_zero() -> None:
    assert [fade_weight(n, 4) for n in (0, 1, 2, 4, 9)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert fade_weight(0, 0) == 0.0


def test_cosine_top_is_the_dense_cosine_ranking() -> None:
    rng = np.random.default_rng(5)
    dense = rng.random((30, 12)) * (rng.random((30, 12)) < 0.4)
    dense[3] = 0  # an empty row: similar to nothing
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    unit = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    usable = np.ones(30, dtype=bool)
    usable[[1, 2]] = False
    best, scores = cosine_top(sp.csr_matrix(unit), 0, 5, usable)
    ref = unit @ unit[0]
    ref[[0, 1, 2]] = 0
    expect = np.lexsort((np.arange(30), -ref))[:5]
    assert best.tolist() == expect.tolist()
    np.testing.assert_allclose(scores, ref[expect], rtol=1e-5)
    assert 3 not in best.tolist()
    assert cosine_top(sp.csr_matrix(unit), 3, 5)[0].tolist() == []


def test_cosine_top_breaks_ties_to_the_lower_row_beyond_k() -> None:
    unit = sp.csr_matrix(np.ones((50, 1), dtype=np.float32))  # every row the same: all tie at 1
    best, scores = cosine_top(unit, 7, 4)
    assert best.tolist() == [0, 1, 2, 3] and np.allclose(scores, 1)
    assert cosine_top(unit, 0, 0)[0].tolist() == []
