"""Turn raw events into interaction weights and a weighted user×item matrix.

A click and a purchase carry different evidence, so each event type has its own weight; with
``half_life_s`` set, older events fade exponentially relative to a reference time. The weights
produced here are *raw*: the model's ``alpha`` is applied later, by implicit or ``models.foldin``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

CLICK = "click"
PURCHASE = "purchase"
EVENT_TYPES = (CLICK, PURCHASE)


@dataclass(frozen=True)
class WeightingConfig:
    """Per-event-type weights and optional exponential time decay (``None`` = no decay)."""

    click_weight: float = 1.0
    purchase_weight: float = 5.0
    half_life_s: float | None = None

    def __post_init__(self) -> None:
        if self.click_weight < 0 or self.purchase_weight < 0:
            raise ValueError("event weights must be non-negative")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise ValueError("half_life_s must be positive (or None for no decay)")

    def type_weight(self, event_type: str) -> float:
        """Base weight of one event type; raises ``ValueError`` for an unknown type."""
        if event_type == CLICK:
            return self.click_weight
        if event_type == PURCHASE:
            return self.purchase_weight
        raise ValueError(f"unknown event type {event_type!r}; expected one of {EVENT_TYPES}")


def decay_factors(ts_ms: npt.ArrayLike, ref_ms: int | float, half_life_s: float | None) -> npt.NDArray[np.float64]:
    """``0.5 ** ((ref - ts) / half_life)`` per event; all ones when ``half_life_s`` is ``None``.

    Events newer than ``ref_ms`` (clock skew between producers) get factor 1, not a boost.
    """
    ts = np.asarray(ts_ms, dtype=np.float64)
    if half_life_s is None:
        return np.ones(ts.shape, dtype=np.float64)
    age_s = np.maximum(float(ref_ms) - ts, 0.0) / 1000.0
    return np.power(0.5, age_s / half_life_s)


def event_weight(event_type: str, ts_ms: int, now_ms: int, cfg: WeightingConfig) -> float:
    """Weight of a single event at time ``now_ms`` (type weight times time decay)."""
    decay = float(decay_factors(np.array([ts_ms]), now_ms, cfg.half_life_s)[0])
    return cfg.type_weight(str(event_type)) * decay


def event_weights(
    event_types: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    ref_ms: int | float | None,
    cfg: WeightingConfig,
) -> npt.NDArray[np.float64]:
    """Vectorised :func:`event_weight`. ``ref_ms=None`` uses the newest timestamp as reference."""
    types = np.asarray(event_types).astype(str)
    ts = np.asarray(ts_ms, dtype=np.float64)
    if types.shape != ts.shape:
        raise ValueError("event_types and ts_ms must have the same shape")
    is_click, is_purchase = types == CLICK, types == PURCHASE
    unknown = ~(is_click | is_purchase)
    if unknown.any():
        raise ValueError(f"unknown event type(s) {sorted(set(types[unknown].tolist()))[:5]}")
    base = np.where(is_purchase, cfg.purchase_weight, cfg.click_weight)
    if cfg.half_life_s is None or ts.size == 0:
        return base.astype(np.float64)
    ref = float(ts.max()) if ref_ms is None else float(ref_ms)
    return base * decay_factors(ts, ref, cfg.half_life_s)


def weighted_matrix(
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
    weights: npt.ArrayLike,
    shape: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """CSR matrix of summed weights: duplicate (user, item) pairs add up, zeros are dropped.

    Sums are taken in float64 and stored as float32 (what implicit consumes). ``shape`` defaults
    to (max user index + 1, max item index + 1).
    """
    users = np.asarray(user_idx, dtype=np.int64).ravel()
    items = np.asarray(item_idx, dtype=np.int64).ravel()
    vals = np.asarray(weights, dtype=np.float64).ravel()
    if not users.shape == items.shape == vals.shape:
        raise ValueError("user_idx, item_idx and weights must have the same length")
    if users.size and (users.min() < 0 or items.min() < 0):
        raise ValueError("indices must be non-negative")
    if shape is None:
        shape = (int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1)
    # COO -> CSR sums duplicates; that is the "several clicks = stronger signal" rule.
    summed = sp.coo_matrix((vals, (users, items)), shape=shape).tocsr()
    summed.sum_duplicates()
    summed.eliminate_zeros()
    out = sp.csr_matrix(summed, dtype=np.float32)
    out.sort_indices()
    return out


def build_user_items(
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
    event_types: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    cfg: WeightingConfig,
    *,
    ref_ms: int | float | None = None,
    shape: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """Weighted user×item CSR matrix from parallel event arrays (see :func:`event_weights`)."""
    weights = event_weights(event_types, ts_ms, ref_ms, cfg)
    return weighted_matrix(user_idx, item_idx, weights, shape)
