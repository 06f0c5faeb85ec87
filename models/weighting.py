"""Turn raw events into interaction weights and a weighted user×item matrix.

A view, a click, an add-to-cart and a purchase carry different evidence, so each event type of the
registry (:mod:`models.event_types`) has its own weight; with
``half_life_s`` set, older events fade exponentially relative to a reference time. The weights
produced here are *raw*: the model's ``alpha`` is applied later, by implicit or ``models.foldin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.event_types import BY_CODE, DEFAULT_WEIGHTS, TYPE_NAMES, EventType

CLICK = EventType.CLICK.value
PURCHASE = EventType.PURCHASE.value
EVENT_TYPES = TYPE_NAMES


@dataclass(frozen=True)
class WeightingConfig:
    """Per-event-type weights (by type name; the registry's defaults for types not named) and optional
    exponential time decay (``half_life_s``; ``None`` = no decay)."""

    type_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    half_life_s: float | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.type_weights) - set(TYPE_NAMES))
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; expected some of {TYPE_NAMES}")
        if any(w < 0 for w in self.type_weights.values()):
            raise ValueError("event weights must be non-negative")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise ValueError("half_life_s must be positive (or None for no decay)")
        object.__setattr__(self, "type_weights", {**DEFAULT_WEIGHTS, **self.type_weights})

    @property
    def by_code(self) -> npt.NDArray[np.float64]:
        """The weight of each type code (:attr:`EventType.code`), for indexing with a code array."""
        return np.array([self.type_weights[t.value] for t in BY_CODE], dtype=np.float64)

    def type_weight(self, event_type: str) -> float:
        """Base weight of one event type; raises ``ValueError`` for an unknown type."""
        try:
            return self.type_weights[event_type]
        except KeyError:
            raise ValueError(f"unknown event type {event_type!r}; expected one of {EVENT_TYPES}") from None


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
    names, codes = np.unique(types, return_inverse=True)
    unknown = sorted(set(names.tolist()) - set(TYPE_NAMES))
    if unknown:
        raise ValueError(f"unknown event type(s) {unknown[:5]}")
    base = np.array([cfg.type_weight(str(n)) for n in names], dtype=np.float64)[codes.reshape(types.shape)]
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
