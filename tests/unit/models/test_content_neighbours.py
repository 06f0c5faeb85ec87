"""The content neighbour table is the per-item scan (``cosine_top``), row for row: built at once, extended
as rows are appended, with rows that stop being usable (an updated item's old row) dropped."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.content import normalized_rows
from models.content_neighbours import BLOCK, neighbour_table, with_new_rows
from models.ridge import cosine_top


def _rows(n: int, seed: int, features: int = 40) -> sp.csr_matrix:
    """Sparse unit rows with ties (one-hot-like columns shared by many) and a few empty rows."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, features)) < 0.08) * rng.choice([1.0, 1.0, 0.5, 2.0], size=(n, features))
    dense[:, 0] = (np.arange(n) % 3 == 0)  # a "category" column: ties everywhere
    dense[rng.choice(n, 3, replace=False)] = 0
    return normalized_rows(sp.csr_matrix(dense, dtype=np.float32))


def _assert_scan(table_rows: list[tuple[np.ndarray, np.ndarray]], normed: sp.csr_matrix, k: int,
                 usable: np.ndarray | None) -> None:
    for r, (idx, score) in enumerate(table_rows):
        want, want_scores = cosine_top(normed, r, k, usable)
        assert idx.tolist() == want.tolist(), r
        np.testing.assert_array_equal(score, want_scores)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_the_table_is_the_scan_of_every_row(k: int) -> None:
    normed = _rows(BLOCK + 37, seed=k)  # more than one block
    usable = np.ones(normed.shape[0], dtype=bool)
    usable[[4, 9]] = False
    table = neighbour_table(normed, k, usable)
    _assert_scan([table.row(r) for r in range(normed.shape[0])], normed, k, usable)
    assert table.row(int(np.flatnonzero(normed.getnnz(axis=1) == 0)[0]))[0].tolist() == []


def test_appended_rows_extend_the_table_as_if_built_at_once() -> None:
    normed = _rows(300, seed=3)
    table = with_new_rows(neighbour_table(normed[:260], 10), normed)
    _assert_scan([table.row(r) for r in range(300)], normed, 10, None)
    assert with_new_rows(table, normed) is table


def test_rows_no_longer_usable_leave_the_lists() -> None:
    """An updated item: its old row leaves every list (which is scanned again), its new row ranks as any
    new row; the table is the scan again."""
    normed = _rows(200, seed=4)
    table = neighbour_table(normed, 8)
    updated = sp.csr_matrix(sp.vstack([normed, normed[[5]]], format="csr"))
    usable = np.ones(201, dtype=bool)
    usable[5] = False
    extended = with_new_rows(table, updated, usable)
    assert all(5 not in extended.row(r)[0].tolist() for r in range(201))
    for r in (r for r in range(201) if r != 5):
        want, want_scores = cosine_top(updated, r, 8, usable)
        assert extended.row(r)[0].tolist() == want.tolist(), r
        np.testing.assert_array_equal(extended.row(r)[1], want_scores)
