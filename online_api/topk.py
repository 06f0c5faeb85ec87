"""The exact top k of a dense score array, fast on big catalogues."""

from __future__ import annotations

import numpy as np

from models.scoring import top_k


def top_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best scores, best first, ties to the lower position (the order of :func:`models.scoring.top_k`,
    which leaves ties at the k-th place arbitrary), several times faster than it on big arrays.

    A threshold from a strided sample keeps a few hundred candidates; when at least ``k`` items reach
    it, the k best overall are all among them (every item scoring at least the k-th best passes), so
    sorting the candidates is exact. Otherwise (rare) it falls back to ``top_k`` over the full array.
    """
    n = scores.shape[0]
    if n < 4_000 or k * 20 > n:
        return top_k(scores, k)
    sample = scores[:: n // 1_000]
    m = sample.shape[0]
    rank = min(m, 3 + (3 * k * m) // n)  # expect about 3k + 150 candidates
    threshold = np.partition(sample, m - rank)[m - rank]
    cand = (scores >= threshold).nonzero()[0]
    if cand.shape[0] < k:
        return top_k(scores, k)
    # A full sort of the few candidates: score descending, then position ascending (top_k's tie rule).
    return cand[np.lexsort((cand, -scores[cand]))[:k]]
