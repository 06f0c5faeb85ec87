"""The service's candidate pre-filter: exactly the k best scores, best first, ties to the lower position."""

from __future__ import annotations

import numpy as np
import pytest

from models.scoring import top_k
from online_api.service import top_candidates


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    """A full stable sort: score descending, then position ascending."""
    return np.lexsort((np.arange(len(scores)), -scores.astype(np.float64)))[:k]


@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("seed", range(6))
def test_top_candidates_is_the_exact_top_k(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5_000, 60_000))
    scores = rng.standard_normal(n).astype(np.float32)
    if seed % 2:  # coarse values: many ties, including at the k-th place
        scores = np.round(scores * 4) / 4
    scores[rng.choice(n, n // 10, replace=False)] = -np.inf  # masked items (seen, unavailable)
    got = top_candidates(scores, k)
    assert np.array_equal(got, reference(scores, k))
    assert np.array_equal(scores[got], scores[top_k(scores, k)])  # the same scores as the model's top_k


def test_mostly_masked_scores() -> None:
    scores = np.full(20_000, -np.inf, dtype=np.float32)
    scores[[5, 17, 19_999]] = [1.0, 3.0, 1.0]
    assert top_candidates(scores, 5).tolist() == [17, 5, 19_999, 0, 1]
