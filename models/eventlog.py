"""The event log of offline evaluation, its time splits, and the batch model fitted before a split.

Pure numpy (no I/O). Events are ``(ts_ms, user, item, weight)`` rows sorted by time, users and items
dense indices; :mod:`models.evaluation` replays them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.training import ALSParams, train_als
from models.weighting import decay_factors, weighted_matrix

IntArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EventLog:
    """Time-ordered events as parallel arrays (``ts_ms`` ascending; dense user and item indices)."""

    ts_ms: IntArray
    user: IntArray
    item: IntArray
    weight: npt.NDArray[np.float32]
    n_users: int
    n_items: int
    purchase: npt.NDArray[np.bool_] | None = None  # event type (True: purchase); None: not known
    session: IntArray | None = None  # session ids, when the log has them

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        if not len(self.user) == len(self.item) == len(self.weight) == n:
            raise ValueError("ts_ms, user, item and weight must have the same length")
        if any(extra is not None and len(extra) != n for extra in (self.purchase, self.session)):
            raise ValueError("purchase and session must have one entry per event")
        if n and np.any(np.diff(self.ts_ms) < 0):
            raise ValueError("events must be sorted by ts_ms")
        for name, idx, size in (("user", self.user, self.n_users), ("item", self.item, self.n_items)):
            if n and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} indices must lie in [0, {size})")

    def __len__(self) -> int:
        return len(self.ts_ms)

    def index_at(self, ts_ms: int) -> int:
        """Number of events strictly before ``ts_ms`` (the index where a window starting then begins)."""
        return int(np.searchsorted(self.ts_ms, ts_ms, side="left"))


def time_split(log: EventLog, boundaries_ms: Sequence[int]) -> list[tuple[int, int]]:
    """Index ranges ``[start, stop)`` of consecutive windows ``[b_i, b_{i+1})`` of event time.

    An event stamped exactly at a boundary belongs to the later window.
    """
    if any(b >= c for b, c in itertools.pairwise(boundaries_ms)):
        raise ValueError("boundaries must be strictly increasing")
    idx = [log.index_at(b) for b in boundaries_ms]
    return list(itertools.pairwise(idx))


def interaction_matrix(log: EventLog, start: int, stop: int, half_life_s: float | None = None) -> sp.csr_matrix:
    """n_users × n_items CSR of summed weights of events ``[start, stop)``, optionally decayed to the last one."""
    w = log.weight[start:stop].astype(np.float64)
    if half_life_s is not None and stop > start:
        w = w * decay_factors(log.ts_ms[start:stop], log.ts_ms[stop - 1], half_life_s)
    return weighted_matrix(log.user[start:stop], log.item[start:stop], w, shape=(log.n_users, log.n_items))


@dataclass
class BatchModel:
    """A model fitted on the events before a split, laid out over the log's full index space.

    Users and items without training events have zero rows and ``known_* = False``.
    """

    user_factors: F32
    item_factors: F32
    known_users: npt.NDArray[np.bool_]
    known_items: npt.NDArray[np.bool_]
    gram: F32
    user_gram: F32
    regularization: float
    alpha: float
    fit_seconds: float


def fit_batch(log: EventLog, stop: int, params: ALSParams, half_life_s: float | None = None) -> BatchModel:
    """Fit implicit ALS on events ``[0, stop)``; only users and items seen there get factors."""
    full = interaction_matrix(log, 0, stop, half_life_s)
    users = np.flatnonzero(np.diff(full.indptr) > 0)
    items = np.flatnonzero(np.bincount(full.indices, minlength=log.n_items) > 0)
    fit = train_als(full[users][:, items], params)
    user_f = np.zeros((log.n_users, fit.factors), dtype=np.float32)
    item_f = np.zeros((log.n_items, fit.factors), dtype=np.float32)
    user_f[users], item_f[items] = fit.user_factors, fit.item_factors
    known_u, known_i = np.zeros(log.n_users, dtype=bool), np.zeros(log.n_items, dtype=bool)
    known_u[users], known_i[items] = True, True
    return BatchModel(user_f, item_f, known_u, known_i, fit.gram, fit.user_gram, params.regularization,
                      params.alpha, fit.fit_seconds)


def subset(log: EventLog, keep: npt.NDArray[np.bool_]) -> EventLog:
    """The events where ``keep`` holds, over the same user and item index space."""
    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return EventLog(log.ts_ms[keep], log.user[keep], log.item[keep], log.weight[keep], log.n_users, log.n_items,
                    pick(log.purchase), pick(log.session))
