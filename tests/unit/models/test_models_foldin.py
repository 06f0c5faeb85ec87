"""Fold-in must reproduce implicit's recalculate_user / recalculate_item exactly (to float32)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import scipy.sparse as sp

import models.foldin as foldin
from models.foldin import fold_in_items, fold_in_users, gram
from models.training import ALSModelFactors, ALSParams, to_implicit, train_als

TOL = 1e-4


@pytest.fixture(params=["auto", "woodbury_only", "direct_only"])
def solver_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test through both solvers, not just the automatic split by history length."""
    if request.param == "woodbury_only":
        monkeypatch.setattr(foldin, "_WOODBURY_MAX_FRACTION", 1000.0)
    elif request.param == "direct_only":
        monkeypatch.setattr(foldin, "_WOODBURY_MAX_FRACTION", 0.0)
        monkeypatch.setattr(foldin, "_MAX_CONDITION", 0.0)
    yield request.param


def _implicit_users(model: ALSModelFactors, rows: sp.csr_matrix) -> np.ndarray:
    return to_implicit(model).recalculate_user(np.arange(rows.shape[0]), rows)


def test_gram_is_float32_yty() -> None:
    y = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    g = gram(y)
    assert g.dtype == np.float32 and g.shape == (8, 8)
    np.testing.assert_allclose(g, y.T.astype(np.float64) @ y, rtol=1e-5, atol=1e-4)


def test_checkerboard_matches_recalculate_user(
    checkerboard_model: tuple[ALSModelFactors, sp.csr_matrix], solver_path: str
) -> None:
    model, matrix = checkerboard_model
    assert model.factors == 64
    ours = fold_in_users(model.item_factors, model.gram, matrix, 0.05, 2.0)
    expected = _implicit_users(model, matrix)
    assert ours.dtype == np.float32 and ours.shape == (50, 64)
    assert np.abs(ours - expected).max() <= TOL
    # one user at a time, as a stream processor calls implicit
    reference = to_implicit(model)
    for user in (0, 1, 17):
        single = reference.recalculate_user(user, matrix[user])
        assert np.abs(ours[user] - single).max() <= TOL


def test_random_matrix_matches_recalculate_user(
    random_model: tuple[ALSModelFactors, sp.csr_matrix],
    make_random_weights: Callable[..., sp.csr_matrix],
    solver_path: str,
) -> None:
    model, _ = random_model
    # fresh users (not the training rows), long and short histories, some empty
    new = make_random_weights(np.random.default_rng(11), 300, model.n_items, 150)
    assert (np.diff(new.indptr) == 0).any() and np.diff(new.indptr).max() > 64
    ours = fold_in_users(model.item_factors, model.gram, new, 0.1, 2.0)
    expected = _implicit_users(model, new)
    assert np.abs(ours - expected).max() <= TOL
    assert not ours[np.diff(new.indptr) == 0].any()  # empty history -> zero vector


@pytest.mark.parametrize("alpha", [1.0, 0.3, 7.5])
def test_alpha_dislikes_and_small_confidences(
    random_model: tuple[ALSModelFactors, sp.csr_matrix],
    make_random_weights: Callable[..., sp.csr_matrix],
    alpha: float,
    solver_path: str,
) -> None:
    """c = alpha*w with c < 1 (negative A weight) and w < 0 (dislikes) follow implicit's rules."""
    model, _ = random_model
    new = make_random_weights(np.random.default_rng(3), 120, model.n_items, 80, signed=True)
    assert (new.data < 0).any() and ((alpha * new.data > 0) & (alpha * new.data < 1)).any()
    reference = to_implicit(model)
    reference.alpha = alpha
    expected = reference.recalculate_user(np.arange(new.shape[0]), new)
    ours = fold_in_users(model.item_factors, model.gram, new, 0.1, alpha)
    assert np.abs(ours - expected).max() <= TOL


def test_duplicate_entries_are_separate_terms_like_implicit(
    random_model: tuple[ALSModelFactors, sp.csr_matrix],
) -> None:
    model, _ = random_model
    # non-canonical CSR: item 5 appears twice in row 0; implicit does not sum them
    raw = sp.csr_matrix(
        (np.array([1.0, 2.0, 3.0, 1.0], dtype=np.float32), np.array([5, 9, 5, 4]), np.array([0, 3, 4])),
        shape=(2, model.n_items),
    )
    assert not raw.has_canonical_format
    expected = _implicit_users(model, raw)
    ours = fold_in_users(model.item_factors, model.gram, raw, 0.1, 2.0)
    assert np.abs(ours - expected).max() <= TOL
    summed = fold_in_users(model.item_factors, model.gram, sp.csr_matrix(raw.toarray()), 0.1, 2.0)
    assert np.abs(summed[0] - ours[0]).max() > 1e-3  # summing first is a different system


def test_pair_list_input_equals_csr(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, matrix = random_model
    rows = matrix[:40]
    pairs = [(rows[i].indices, rows[i].data.astype(np.float64)) for i in range(40)]
    from_pairs = fold_in_users(model.item_factors, model.gram, pairs, 0.1, 2.0)
    from_csr = fold_in_users(model.item_factors, model.gram, rows, 0.1, 2.0)
    assert np.abs(from_pairs - from_csr).max() <= 1e-6


def test_empty_inputs(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    assert fold_in_users(model.item_factors, model.gram, [], 0.1, 2.0).shape == (0, 64)
    empty = sp.csr_matrix((3, model.n_items), dtype=np.float32)
    out = fold_in_users(model.item_factors, model.gram, empty, 0.1, 2.0)
    assert out.shape == (3, 64) and not out.any()
    with pytest.raises(ValueError):
        fold_in_users(model.item_factors, model.gram, [(np.array([1, 2]), np.array([1.0]))], 0.1, 2.0)


def test_zero_regularization_uses_direct_solver_and_still_matches(
    make_random_weights: Callable[..., sp.csr_matrix],
) -> None:
    matrix = make_random_weights(np.random.default_rng(5), 200, 300, 60)
    model = train_als(matrix, ALSParams(factors=16, regularization=0.0, iterations=5, random_state=1))
    new = make_random_weights(np.random.default_rng(6), 50, 300, 60)
    ours = fold_in_users(model.item_factors, model.gram, new, 0.0, 2.0)
    assert np.abs(ours - _implicit_users(model, new)).max() <= TOL


def test_items_fold_in_matches_recalculate_item(
    random_model: tuple[ALSModelFactors, sp.csr_matrix], solver_path: str
) -> None:
    model, matrix = random_model
    item_users = matrix.T.tocsr()[:200]
    expected = to_implicit(model).recalculate_item(np.arange(200), item_users)
    ours = fold_in_items(model.user_factors, model.user_gram, item_users, 0.1, 2.0)
    assert np.abs(ours - expected).max() <= TOL


def test_items_fold_in_recovers_trained_item_vectors(
    make_random_weights: Callable[..., sp.csr_matrix],
) -> None:
    """With the exact (non-CG) solver, ALS's last half-step IS an item fold-in on final users."""
    matrix = make_random_weights(np.random.default_rng(9), 300, 400, 50)
    params = ALSParams(factors=64, regularization=0.1, alpha=2.0, iterations=4, use_cg=False, random_state=2)
    model = train_als(matrix, params)
    item_users = matrix.T.tocsr()
    refolded = fold_in_items(model.user_factors, model.user_gram, item_users, 0.1, 2.0)
    assert np.abs(refolded - model.item_factors).max() <= TOL


def test_out_of_range_history_index_is_rejected(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    for bad in (-1, model.n_items):
        with pytest.raises(IndexError):
            fold_in_users(model.item_factors, model.gram, [(np.array([0, bad]), np.array([1.0, 1.0]))], 0.1, 2.0)
