"""Shared fixtures for the models/ unit tests: small deterministic matrices and fitted models."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp

from models.training import ALSModelFactors, ALSParams, train_als


def checkerboard(n: int) -> sp.csr_matrix:
    """implicit's test matrix: even users like even items, odd like odd; diagonal withheld."""
    dense = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        dense[i, i % 2 :: 2] = 1.0
    return sp.csr_matrix(dense - np.eye(n, dtype=np.float32))


def random_weights(
    rng: np.random.Generator, n_rows: int, n_cols: int, max_len: int, *, signed: bool = False
) -> sp.csr_matrix:
    """Rows with Zipf-ish lengths in [1, max_len] (some empty), weights in (0, 6] or signed."""
    support = np.arange(0, max_len + 1)
    p = (support + 1.0) ** -1.3
    lengths = rng.choice(support, size=n_rows, p=p / p.sum())
    rows, cols = [], []
    for r, length in enumerate(lengths):
        rows.append(np.full(length, r))
        cols.append(rng.choice(n_cols, size=length, replace=False))
    data = rng.uniform(0.1, 6.0, size=int(lengths.sum()))
    if signed:
        data[rng.random(len(data)) < 0.1] *= -1.0
    return sp.csr_matrix(
        (data.astype(np.float32), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_cols)
    )


@pytest.fixture(scope="session")
def checkerboard_model() -> tuple[ALSModelFactors, sp.csr_matrix]:
    """64-factor ALS fitted on a 50×50 checkerboard (as in implicit's own tests)."""
    matrix = checkerboard(50)
    params = ALSParams(factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=23)
    return train_als(matrix, params), matrix


@pytest.fixture(scope="session")
def random_model() -> tuple[ALSModelFactors, sp.csr_matrix]:
    """64-factor ALS fitted on a random 400×1500 sparse matrix of raw weights."""
    matrix = random_weights(np.random.default_rng(7), 400, 1500, 120)
    params = ALSParams(factors=64, regularization=0.1, alpha=2.0, iterations=8, random_state=7)
    return train_als(matrix, params), matrix


@pytest.fixture(scope="session")
def make_checkerboard() -> Callable[[int], sp.csr_matrix]:
    """The :func:`checkerboard` builder, for tests that need their own size."""
    return checkerboard


@pytest.fixture(scope="session")
def make_random_weights() -> Callable[..., sp.csr_matrix]:
    """The :func:`random_weights` builder."""
    return random_weights
