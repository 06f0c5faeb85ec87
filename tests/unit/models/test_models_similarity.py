"""Cosine item-item similarity on a checkerboard model, cross-checked against implicit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.similarity import normalize_rows, similar_items
from models.training import ALSModelFactors, to_implicit


def test_normalize_rows_unit_length_and_zero_rows() -> None:
    f = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    n = normalize_rows(f)
    np.testing.assert_allclose(n, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)
    assert n.dtype == np.float32 and np.isfinite(n).all()


def test_same_block_items_are_most_similar(checkerboard_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = checkerboard_model
    normed = normalize_rows(model.item_factors)
    for item in range(50):
        ids, scores = similar_items(item, model.item_factors, 10, normed=normed)
        assert len(ids) == 10 and item not in ids
        assert all(i % 2 == item % 2 for i in ids), (item, ids)
        assert np.all(np.diff(scores) <= 1e-7)


def test_matches_implicit_similar_items(checkerboard_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = checkerboard_model
    reference = to_implicit(model)
    for item in range(50):
        ref_ids, ref_scores = reference.similar_items(item, N=8)
        keep = ref_ids != item  # implicit returns the item itself first
        ids, scores = similar_items(item, model.item_factors, int(keep.sum()))
        np.testing.assert_array_equal(ids, ref_ids[keep])
        np.testing.assert_allclose(scores, ref_scores[keep], atol=1e-5)


def test_candidate_mask_and_bounds(checkerboard_model: tuple[ALSModelFactors, sp.csr_matrix]) -> None:
    model, _ = checkerboard_model
    odd_only = np.arange(50) % 2 == 1
    ids, _ = similar_items(0, model.item_factors, 5, candidate_mask=odd_only)
    assert all(i % 2 == 1 for i in ids)
    with pytest.raises(IndexError):
        similar_items(50, model.item_factors, 5)
