"""FoldInSolver (the per-model fold-in) against implicit and against an exact float64 solve."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from models.foldin import FoldInSolver, fold_in_users, gram
from models.training import ALSModelFactors, to_implicit

TOL = 1e-4
Rows = Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]


def _exact(y: np.ndarray, g: np.ndarray, rows: Rows, reg: float, alpha: float) -> np.ndarray:
    """The fold-in system of implicit 0.7.3 written out and solved in float64, row by row."""
    f = y.shape[1]
    m = np.asarray(g, dtype=np.float64) + reg * np.eye(f)
    y64 = np.asarray(y, dtype=np.float64)
    out = np.zeros((len(rows), f))
    for r, (items, weights) in enumerate(rows):
        if len(items):
            c = alpha * np.asarray(weights, dtype=np.float64)
            yu = y64[items]
            out[r] = np.linalg.solve(m + (yu.T * (np.abs(c) - 1)) @ yu, yu.T @ np.maximum(c, 0))
    return out


def _to_csr(rows: Rows, n_items: int) -> sp.csr_matrix:
    lengths = [len(i) for i, _ in rows]
    return sp.csr_matrix(
        (
            np.concatenate([w for _, w in rows]).astype(np.float32),
            np.concatenate([i for i, _ in rows]),
            np.concatenate([[0], np.cumsum(lengths)]),
        ),
        shape=(len(rows), n_items),
    )


def _clicks_and_purchases(
    rng: np.random.Generator, lengths: Sequence[int], n_items: int
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """Histories of distinct items with click weight 1 and purchase weight 5."""
    return [
        (rng.choice(n_items, size=n, replace=False), np.where(rng.random(n) < 0.3, 5.0, 1.0)) for n in lengths
    ]


def _implicit_around(y: np.ndarray, regularization: float) -> Any:
    """A bare implicit model around item factors ``y`` (recalculate_user needs nothing else)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=y.shape[1], regularization=regularization, alpha=2.0, num_threads=1)
    model.item_factors = y
    model.user_factors = np.zeros((1, y.shape[1]), dtype=np.float32)
    return model


# every path: empty, the L = 1 and L = 2 closed forms, padded Woodbury buckets around the
# f/2 = 32 boundary, and the direct solver up to 200 items
LENGTHS = [0, 1, 1, 2, 2, 3, 4, 5, 7, 9, 12, 16, 17, 25, 31, 32, 33, 34, 48, 64, 65, 120, 200]


def test_matches_implicit_on_long_histories_with_purchases(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    rng = np.random.default_rng(1)
    rows = _clicks_and_purchases(rng, LENGTHS * 4, model.n_items)
    solver = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0)
    ours = solver.fold_in(rows)
    reference = to_implicit(model)
    expected = reference.recalculate_user(np.arange(len(rows)), _to_csr(rows, model.n_items))
    assert ours.dtype == np.float32 and ours.shape == (len(rows), model.factors)
    assert np.abs(ours - expected).max() <= TOL
    assert np.abs(ours - _exact(model.item_factors, model.gram, rows, 0.1, 2.0)).max() <= TOL
    assert not ours[0].any()  # empty history -> zero vector
    # one user per call, as a stream processor would call implicit
    for r in (1, 3, 16, 22):
        single = reference.recalculate_user(0, _to_csr(rows[r : r + 1], model.n_items))
        assert np.abs(ours[r] - single).max() <= TOL


def test_precomputed_lazy_and_convenience_agree(
    random_model: tuple[ALSModelFactors, sp.csr_matrix], make_random_weights: Callable[..., sp.csr_matrix]
) -> None:
    model, _ = random_model
    batch = make_random_weights(np.random.default_rng(4), 300, model.n_items, 150, signed=True)
    eager = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0).fold_in(batch)
    lazy = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0, precompute=False).fold_in(batch)
    convenience = fold_in_users(model.item_factors, model.gram, batch, 0.1, 2.0)
    assert np.abs(eager - lazy).max() <= 1e-6
    assert np.array_equal(lazy, convenience)


def test_solver_is_reusable_across_batches(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    solver = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0)
    rows = _clicks_and_purchases(np.random.default_rng(2), LENGTHS, model.n_items)
    whole = solver.fold_in(rows)
    parts = np.vstack([solver.fold_in(rows[:7]), solver.fold_in(rows[7:])])
    assert np.array_equal(whole, parts)  # rows are independent of what else is in the batch
    assert solver.fold_in([]).shape == (0, model.factors)


def test_with_extra_items_folds_against_the_model_gram(
    random_model: tuple[ALSModelFactors, sp.csr_matrix],
) -> None:
    """Items folded in after the refit join the catalogue; M stays the published version's."""
    model, _ = random_model
    rng = np.random.default_rng(3)
    extra = rng.standard_normal((40, model.factors)).astype(np.float32) * 0.3
    base = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0)
    grown = base.with_extra_items(extra)
    assert (base.n_items, grown.n_items, grown.factors) == (model.n_items, model.n_items + 40, model.factors)
    rows = _clicks_and_purchases(rng, LENGTHS, model.n_items + 40)
    rows[1] = (np.array([model.n_items + 5]), np.array([5.0]))  # only a new item
    all_items = np.vstack([model.item_factors, extra])
    ours = grown.fold_in(rows)
    assert np.abs(ours - _exact(all_items, model.gram, rows, 0.1, 2.0)).max() <= TOL
    lazy = FoldInSolver(all_items, model.gram, 0.1, 2.0, precompute=False).fold_in(rows)
    assert np.abs(ours - lazy).max() <= 1e-6
    with pytest.raises(IndexError):  # the original solver does not know the new items
        base.fold_in(rows[1:2])


@pytest.mark.parametrize("spread, regularization", [(3, 0.05), (5, 1e-3), (6, 1e-4)])
def test_ill_conditioned_factors_woodbury_stays_exact(spread: int, regularization: float) -> None:
    """Nearly collinear item factors (cond(YtY + reg I) up to ~1e8).

    The float64 Woodbury path stays within 1e-5 of the exact solution; the float32 Cholesky
    path for long histories is as (in)accurate as implicit itself, which has the same error.
    """
    rng = np.random.default_rng(spread)
    n, f = 2000, 64
    u, _ = np.linalg.qr(rng.standard_normal((n, f)))
    v, _ = np.linalg.qr(rng.standard_normal((f, f)))
    y = ((u * (30.0 * np.logspace(0, -spread, f))) @ v.T).astype(np.float32)
    g = gram(y)
    short = _clicks_and_purchases(rng, [1] * 50 + [2] * 50 + list(range(3, 33)) * 3, n)
    solver = FoldInSolver(y, g, regularization, 2.0)
    assert solver._woodbury_max == 32  # the conditioning guard still lets Woodbury run
    exact = _exact(y, g, short, regularization, 2.0)
    scale = max(1.0, float(np.abs(exact).max()))
    assert np.abs(solver.fold_in(short) - exact).max() <= 1e-5 * scale

    long = _clicks_and_purchases(rng, [40, 80, 200], n)
    reference = _implicit_around(y, regularization)
    try:
        expected = reference.recalculate_user(np.arange(3), _to_csr(long, n))
    except ValueError:  # implicit's float32 Cholesky gave up: so do we
        with pytest.raises(np.linalg.LinAlgError):
            solver.fold_in(long)
        return
    ours = solver.fold_in(long)
    exact = _exact(y, g, long, regularization, 2.0)
    assert np.abs(ours - exact).max() <= 2 * np.abs(expected - exact).max() + 1e-5 * scale


def test_regularization_zero_falls_back_to_the_direct_solver(
    random_model: tuple[ALSModelFactors, sp.csr_matrix],
) -> None:
    model, _ = random_model
    solver = FoldInSolver(model.item_factors, model.gram, 0.0, 2.0)
    assert solver._woodbury_max == 0 and solver._table is None
    rows = _clicks_and_purchases(np.random.default_rng(6), LENGTHS, model.n_items)
    assert np.abs(solver.fold_in(rows) - _exact(model.item_factors, model.gram, rows, 0.0, 2.0)).max() <= TOL


def test_bad_input_is_rejected(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = random_model
    with pytest.raises(ValueError):
        FoldInSolver(model.item_factors, model.gram[:10], 0.1, 2.0)
    with pytest.raises(ValueError):
        FoldInSolver(model.item_factors[0], model.gram, 0.1, 2.0)
    solver = FoldInSolver(model.item_factors, model.gram, 0.1, 2.0)
    for bad in (-1, model.n_items):
        with pytest.raises(IndexError):
            solver.fold_in([(np.array([0, bad]), np.array([1.0, 1.0]))])
