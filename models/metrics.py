"""Offline ranking metrics over per-user recommendation lists.

``recommended[u]`` is user u's ranked item indices (best first, ``-1`` padding ignored) and
``relevant[u]`` the held-out items. Users with no relevant items are skipped by every metric
(they cannot be hit), so averages are over users with at least one relevant item; with none
left the metric is 0.0. Binary relevance throughout.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import numpy.typing as npt

Ranked = Sequence[int] | npt.NDArray[np.integer]
Relevant = Collection[int] | npt.NDArray[np.integer]


def _as_list(values: Iterable[int] | npt.NDArray[np.integer]) -> list[int]:
    """Plain ints from an array, list, set or any iterable (sets do not survive np.asarray)."""
    raw = values.ravel().tolist() if isinstance(values, np.ndarray) else list(values)
    return [int(i) for i in raw]


def _pairs(
    recommended: Sequence[Ranked] | npt.NDArray[np.integer], relevant: Sequence[Relevant], k: int
) -> Iterable[tuple[list[int], set[int]]]:
    """Yield (top-k list without padding, relevant set) for users with something relevant."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(recommended) != len(relevant):
        raise ValueError("recommended and relevant must have one entry per user")
    for recs, rel in zip(recommended, relevant, strict=True):
        rel_set = {int(i) for i in _as_list(rel)}
        if rel_set:
            yield [i for i in _as_list(recs)[:k] if i >= 0], rel_set


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def hit_rate_at_k(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int) -> float:
    """Share of users with at least one relevant item in their top k."""
    return _mean([float(any(i in rel for i in top)) for top, rel in _pairs(recommended, relevant, k)])


def precision_at_k(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int) -> float:
    """Mean of |top-k ∩ relevant| / k (the denominator is k even if fewer items were returned)."""
    return _mean([len(set(top) & rel) / k for top, rel in _pairs(recommended, relevant, k)])


def recall_at_k(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int) -> float:
    """Mean of |top-k ∩ relevant| / |relevant|."""
    return _mean([len(set(top) & rel) / len(rel) for top, rel in _pairs(recommended, relevant, k)])


def map_at_k(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int) -> float:
    """Mean average precision: Σ_{hits at rank r} precision@r / min(|relevant|, k)."""
    values = []
    for top, rel in _pairs(recommended, relevant, k):
        hits, total, seen = 0, 0.0, set()
        for rank, item in enumerate(top, start=1):
            if item in rel and item not in seen:  # a duplicated recommendation earns once
                hits += 1
                total += hits / rank
            seen.add(item)
        values.append(total / min(len(rel), k))
    return _mean(values)


def ndcg_at_k(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int) -> float:
    """Normalised DCG with gain 1 and discount 1/log2(rank + 1)."""
    values = []
    for top, rel in _pairs(recommended, relevant, k):
        seen: set[int] = set()
        dcg = 0.0
        for rank, item in enumerate(top, start=1):
            if item in rel and item not in seen:
                dcg += 1.0 / math.log2(rank + 1)
            seen.add(item)
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(rel), k) + 1))
        values.append(dcg / ideal)
    return _mean(values)


def catalogue_coverage(recommended: Iterable[Ranked], n_items: int, k: int | None = None) -> float:
    """Share of the catalogue that appears in at least one (top-k) list."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    shown: set[int] = set()
    for recs in recommended:
        top = _as_list(recs) if k is None else _as_list(recs)[:k]
        shown.update(i for i in top if 0 <= i < n_items)
    return len(shown) / n_items


def evaluate(recommended: Sequence[Ranked], relevant: Sequence[Relevant], k: int, n_items: int) -> dict[str, float]:
    """All metrics at k in one dict (keys like ``ndcg@10``), plus ``users`` evaluated."""
    users = sum(1 for _ in _pairs(recommended, relevant, k))
    return {
        f"hit_rate@{k}": hit_rate_at_k(recommended, relevant, k),
        f"precision@{k}": precision_at_k(recommended, relevant, k),
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"map@{k}": map_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        f"coverage@{k}": catalogue_coverage(recommended, n_items, k),
        "users": float(users),
    }
