"""explain() must agree with implicit's AlternatingLeastSquares.explain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from models.explain import explain
from models.foldin import fold_in_users
from models.training import ALSModelFactors, ALSParams, to_implicit, train_als


@pytest.fixture(scope="module")
def explain_model() -> tuple[ALSModelFactors, sp.csr_matrix]:
    # the matrix from implicit's test_explain, users as rows
    counts = sp.csr_matrix(
        [
            [1, 1, 0, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [1, 4, 1, 0, 7, 0],
            [1, 1, 0, 0, 0, 0],
            [9, 0, 4, 1, 0, 1],
            [0, 1, 0, 0, 0, 1],
            [0, 0, 2, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    user_items = (counts * 2).T.tocsr()
    params = ALSParams(factors=4, regularization=20.0, alpha=1.5, iterations=50, use_cg=False, random_state=23)
    return train_als(user_items, params), user_items


@pytest.mark.parametrize("userid", range(6))
def test_matches_implicit_explain(explain_model: tuple[ALSModelFactors, sp.csr_matrix], userid: int) -> None:
    model, user_items = explain_model
    reference = to_implicit(model)
    row = user_items[userid]
    for itemid in range(model.n_items):
        for n in (2, 10):
            ref_total, ref_top, _ = reference.explain(userid, user_items, itemid, N=n)
            ours = explain(row.indices, row.data, itemid, model.item_factors, model.gram, 20.0, 1.5, n=n)
            assert ours.score == pytest.approx(ref_total, abs=1e-6)
            assert [i for i, _ in ours.contributions] == [i for i, _ in ref_top]
            np.testing.assert_allclose([s for _, s in ours.contributions], [s for _, s in ref_top], atol=1e-6)


def test_score_is_folded_in_user_dot_item(random_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, matrix = random_model
    row = matrix[3]
    user = fold_in_users(model.item_factors, model.gram, row, 0.1, 2.0)[0]
    ours = explain(row.indices, row.data, 42, model.item_factors, model.gram, 0.1, 2.0, n=len(row.indices))
    assert ours.score == pytest.approx(float(user @ model.item_factors[42]), abs=1e-4)
    assert ours.score == pytest.approx(sum(s for _, s in ours.contributions), abs=1e-6)
    assert len(ours.contributions) == len(row.indices)


def test_dislikes_are_skipped_like_implicit() -> None:
    rng = np.random.default_rng(0)
    reference = AlternatingLeastSquares(factors=4, regularization=0.5, alpha=1.0, random_state=0)
    reference.item_factors = rng.standard_normal((10, 4)).astype(np.float32)
    reference.user_factors = np.zeros((1, 4), dtype=np.float32)
    row = sp.csr_matrix((np.array([2.0, -1.0, 1.0], dtype=np.float32), ([0, 0, 0], [1, 2, 3])), shape=(1, 10))
    ref_total, ref_top, _ = reference.explain(0, row, 5, N=5)
    y = reference.item_factors
    ours = explain(row.indices, row.data, 5, y, y.T @ y, 0.5, 1.0, n=5)
    assert [i for i, _ in ours.contributions] == [i for i, _ in ref_top]
    assert 2 not in dict(ours.contributions)
    assert ours.score == pytest.approx(ref_total, abs=1e-6)
