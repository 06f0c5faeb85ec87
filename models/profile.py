"""A user's repeat profile (decayed frequency per item) and session (last items, time since the last event).

Both come from the user's history, oldest first: ``items``, ``ts_ms`` and ``weights`` (the event
weights of :mod:`models.weighting`). The repeat profile can also be kept incrementally, as the
worker does: add ``weight · 2^((ts - epoch) / half_life)`` to the item's stored score (see
:func:`models.covisitation.decay_units`); :func:`repeat_profile` gives the same order as the
stored scores, because every stored value shares one decay factor at read time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Session:
    """The user's newest distinct items (newest first), their weights, and seconds since the last event."""

    items: IntArray
    weights: F64
    idle_s: float


def repeat_profile(items: npt.ArrayLike, ts_ms: npt.ArrayLike, weights: npt.ArrayLike, now_ms: int,
                   half_life_s: float | None) -> tuple[IntArray, F64]:
    """Decayed frequency per item: ``Σ weight · 0.5^((now - ts) / half_life)`` (plain sums without decay).

    Returns the distinct items (ascending) and their scores. Events after ``now_ms`` count as now.
    """
    it = np.asarray(items, dtype=np.int64)
    if len(it) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if half_life_s is not None:
        age = np.maximum(now_ms - np.asarray(ts_ms, dtype=np.float64), 0.0) / 1000.0
        w = w * np.exp2(-age / half_life_s)
    uniq, inv = np.unique(it, return_inverse=True)
    return uniq, np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.float64)


def session(items: npt.ArrayLike, ts_ms: npt.ArrayLike, now_ms: int, n: int, decay: float) -> Session:
    """The newest ``n`` distinct items of the history, weighted ``decay^rank`` (newest: rank 0, weight 1)."""
    it = np.asarray(items, dtype=np.int64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(it) == 0 or n < 1:
        return Session(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), float("inf"))
    rev = it[::-1]
    _, first = np.unique(rev, return_index=True)
    newest = rev[np.sort(first)][:n]
    return Session(newest, np.power(float(decay), np.arange(len(newest), dtype=np.float64)),
                   max(0.0, (now_ms - int(ts[-1])) / 1000.0))
