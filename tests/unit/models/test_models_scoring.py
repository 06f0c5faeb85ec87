"""recommend / recommend_batch against a brute-force full sort with the same filters."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.scoring import eligible_mask, recommend, recommend_batch, top_k

N_ITEMS, F = 500, 16


@pytest.fixture(scope="module")
def factors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((N_ITEMS, F)).astype(np.float32), rng.standard_normal((20, F)).astype(np.float32)


def brute_force(user: np.ndarray, items: np.ndarray, k: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = items @ user
    ranked = sorted((i for i in range(len(items)) if keep[i]), key=lambda i: (-scores[i], i))[:k]
    return np.array(ranked, dtype=np.int64), scores[ranked]


def test_top_k_orders_and_breaks_ties_by_index() -> None:
    scores = np.array([0.5, 2.0, 2.0, -1.0, 3.0])
    np.testing.assert_array_equal(top_k(scores, 3), [4, 1, 2])
    np.testing.assert_array_equal(top_k(scores, 10), [4, 1, 2, 0, 3])
    assert top_k(scores, 0).shape == (0,)


def test_unfiltered_top_k_matches_full_sort(factors: tuple[np.ndarray, np.ndarray]) -> None:
    items, users = factors
    for user in users[:5]:
        ids, scores = recommend(user, items, 10)
        exp_ids, exp_scores = brute_force(user, items, 10, np.ones(N_ITEMS, bool))
        np.testing.assert_array_equal(ids, exp_ids)
        np.testing.assert_allclose(scores, exp_scores, rtol=1e-6)
        assert np.all(np.diff(scores) <= 0)


def test_all_filters_combined(factors: tuple[np.ndarray, np.ndarray]) -> None:
    items, users = factors
    rng = np.random.default_rng(1)
    seen = rng.choice(N_ITEMS, 40, replace=False)
    category = rng.random(N_ITEMS) < 0.5
    allow = rng.choice(N_ITEMS, 300, replace=False)
    deny = np.zeros(N_ITEMS, bool)
    deny[rng.choice(N_ITEMS, 30, replace=False)] = True
    keep = category.copy()
    allow_mask = np.zeros(N_ITEMS, bool)
    allow_mask[allow] = True
    keep &= allow_mask & ~deny
    keep[seen] = False
    ids, scores = recommend(users[0], items, 15, exclude=seen, allow=allow, deny=deny, candidate_mask=category)
    exp_ids, exp_scores = brute_force(users[0], items, 15, keep)
    np.testing.assert_array_equal(ids, exp_ids)
    np.testing.assert_allclose(scores, exp_scores, rtol=1e-6)
    assert not set(ids) & set(seen.tolist()) and category[ids].all() and not deny[ids].any()
    # the same filters given the other way round (allow as mask, deny as indices)
    ids2, _ = recommend(
        users[0], items, 15, exclude=seen, allow=allow_mask, deny=np.flatnonzero(deny), candidate_mask=category
    )
    np.testing.assert_array_equal(ids2, exp_ids)


def test_fewer_eligible_than_k_and_bad_indices(factors: tuple[np.ndarray, np.ndarray]) -> None:
    items, users = factors
    ids, scores = recommend(users[1], items, 10, allow=np.array([7, 3, 3, 900, -1]))
    assert sorted(ids.tolist()) == [3, 7] and len(scores) == 2
    # -1 (unknown id) must not exclude the last item through negative indexing
    ids_all, _ = recommend(users[1], items, N_ITEMS, exclude=np.array([-1, N_ITEMS + 5]))
    assert len(ids_all) == N_ITEMS
    with pytest.raises(ValueError):
        recommend(users[1], items, 5, candidate_mask=np.ones(3, bool))
    assert eligible_mask(N_ITEMS) is None


def test_batch_equals_single(factors: tuple[np.ndarray, np.ndarray]) -> None:
    items, users = factors
    rng = np.random.default_rng(2)
    seen = [rng.choice(N_ITEMS, int(n), replace=False) for n in rng.integers(0, 50, len(users))]
    seen_csr = sp.csr_matrix(
        (np.ones(sum(map(len, seen))), (np.repeat(np.arange(len(users)), list(map(len, seen))), np.concatenate(seen))),
        shape=(len(users), N_ITEMS),
    )
    deny = rng.choice(N_ITEMS, 25, replace=False)
    for exclude in (seen, seen_csr):
        ids, scores = recommend_batch(users, items, 12, exclude=exclude, deny=deny)
        assert ids.shape == scores.shape == (len(users), 12)
        for u, user in enumerate(users):
            exp_ids, exp_scores = recommend(user, items, 12, exclude=seen[u], deny=deny)
            np.testing.assert_array_equal(ids[u], exp_ids)
            np.testing.assert_allclose(scores[u], exp_scores, rtol=1e-5)


def test_batch_pads_when_too_few_eligible(factors: tuple[np.ndarray, np.ndarray]) -> None:
    items, users = factors
    ids, scores = recommend_batch(users[:3], items, 5, allow=np.array([1, 2, 3]))
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert {frozenset(r[:3].tolist()) for r in ids} == {frozenset({1, 2, 3})}
    with pytest.raises(ValueError):
        recommend_batch(users[:3], items, 5, exclude=[np.array([1])])
