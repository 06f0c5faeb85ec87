"""The product's state during an offline replay: trending scores and the streaming worker's vectors.

:class:`TrendingScores` keeps ``streamrec.store.trending``'s decayed window incrementally;
:class:`StreamingState` holds what the streaming worker would have written (exact fold-in of each
user's capped history, new items folded in every ``refresh_s``). :func:`models.evaluation.replay`
queries both. Pure numpy (no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.eventlog import F32, BatchModel, EventLog, IntArray
from models.foldin import fold_in_items, fold_in_users
from models.intsets import distinct
from models.ridge import blend_by_count
from models.weighting import weighted_matrix


@dataclass(frozen=True)
class TrendingConfig:
    """A trending window like ``streamrec.store.trending.Window``: ``buckets`` buckets of ``bucket_s``."""

    bucket_s: int = 60
    buckets: int = 60
    half_life_buckets: float = 30.0

    @property
    def label(self) -> str:
        """Human-readable window and half-life, e.g. ``1h window, half-life 30m``."""
        window, half = self.bucket_s * self.buckets, self.bucket_s * self.half_life_buckets
        return f"{_span(window)} window, half-life {_span(half)}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class ReplayConfig:
    """What a replay computes; defaults mirror the product's settings."""

    k: int = 10
    exclude_seen: bool = True
    trending: tuple[TrendingConfig, ...] = (TrendingConfig(),)  # the first one also feeds fallbacks and blends
    blend_weights: tuple[float, ...] = (0.2,)
    trend_top: int = 200
    history_cap: int = 200
    new_item_min_interactions: int = 3
    refresh_s: float = 60.0
    fold_new_items: bool = True


class TrendingScores:
    """Incremental copy of the product's trending score, in units of 2^(bucket / half-life) to stay O(1)."""

    def __init__(self, cfg: TrendingConfig, log: EventLog, start: int) -> None:
        self.cfg, self.log = cfg, log
        self.bucket = log.ts_ms // (cfg.bucket_s * 1000)
        now = int(self.bucket[min(start, len(log) - 1)]) if len(log) else 0
        self.b0 = now
        self.score = np.zeros(log.n_items, dtype=np.float64)
        self.count = np.zeros(log.n_items, dtype=np.int64)
        self.applied = self.expired = int(np.searchsorted(self.bucket, now - cfg.buckets + 1))
        self.advance(start, now)

    def _contrib(self, lo: int, hi: int) -> npt.NDArray[np.float64]:
        rel = (self.bucket[lo:hi] - self.b0) / self.cfg.half_life_buckets
        return self.log.weight[lo:hi].astype(np.float64) * np.exp2(rel)

    def advance(self, upto: int, now_bucket: int) -> None:
        """Apply events ``[applied, upto)`` and drop those older than the window ending at ``now_bucket``."""
        if (now_bucket - self.b0) / self.cfg.half_life_buckets > 200:  # keep exp2 far from overflow
            self.score *= np.exp2((self.b0 - now_bucket) / self.cfg.half_life_buckets)
            self.b0 = now_bucket
        items = self.log.item
        if upto > self.applied:
            np.add.at(self.score, items[self.applied:upto], self._contrib(self.applied, upto))
            np.add.at(self.count, items[self.applied:upto], 1)
            self.applied = upto
        old = min(int(np.searchsorted(self.bucket, now_bucket - self.cfg.buckets + 1)), self.applied)
        if old > self.expired:
            gone = items[self.expired:old]
            np.subtract.at(self.score, gone, self._contrib(self.expired, old))
            np.subtract.at(self.count, gone, 1)
            self.score[gone[self.count[gone] == 0]] = 0.0  # no float residue for items that left the window
            self.expired = old


class Segments:
    """Event indices grouped by a key (user or item), each group in time order."""

    def __init__(self, keys: IntArray, n: int) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=n))])

    def before(self, key: int, j: int, cap: int | None = None) -> IntArray:
        """Indices of ``key``'s events with index < ``j`` (the newest ``cap`` of them)."""
        seg = self.order[self.ptr[key]:self.ptr[key + 1]]
        n = int(np.searchsorted(seg, j))
        return seg[max(0, n - cap) if cap else 0:n]


@dataclass(frozen=True)
class ContentVectors:
    """Cold start: items' vectors from their metadata (``vectors[i]`` where ``has[i]``), each counting as
    ``prior`` interactions when the item's own fold-in arrives (the worker's ``content_items``)."""

    vectors: F32
    has: npt.NDArray[np.bool_]
    prior: float
    arrival_ms: IntArray | None = None  # when each item enters the catalogue (None: before the replay)


class StreamingState:
    """The worker's view of the model: user vectors by exact fold-in, new items folded in periodically;
    with ``content``, items the model does not know start with their content vector."""

    def __init__(self, model: BatchModel, log: EventLog, start: int, cfg: ReplayConfig,
                 content: ContentVectors | None = None) -> None:
        self.model, self.log, self.cfg, self.content = model, log, cfg, content
        self.users, self.items = Segments(log.user, log.n_users), Segments(log.item, log.n_items)
        self.item_factors = model.item_factors.copy()
        self.has_vec = model.known_items.copy()
        self._waiting = np.zeros(0, dtype=np.int64)  # content items not listed yet, by arrival
        if content is not None:
            cold = np.flatnonzero(content.has & ~model.known_items)
            if content.arrival_ms is not None:
                cold = cold[np.argsort(content.arrival_ms[cold], kind="stable")]
            self._waiting = cold
            self._list(int(log.ts_ms[start]) if start < len(log) else 0)
        self.user_factors = model.user_factors.copy()
        self.start = self.done = start
        step = int(cfg.refresh_s * 1000)
        self._step = step
        self._next = (int(log.ts_ms[start]) // step + 1) * step if start < len(log) else 0

    def _histories(self, keys: IntArray, segs: Segments, field_of: IntArray, j: int, usable: npt.NDArray[np.bool_]
                   ) -> sp.csr_matrix:
        """Rows of summed weights over the newest ``history_cap`` events (< j) of each key, usable columns only."""
        rows, cols, wts = [], [], []
        for r, key in enumerate(keys.tolist()):
            ev = segs.before(key, j, self.cfg.history_cap)
            ev = ev[usable[field_of[ev]]]
            rows.append(np.full(len(ev), r))
            cols.append(field_of[ev])
            wts.append(self.log.weight[ev])
        n_cols = len(usable)
        if not rows:
            return sp.csr_matrix((0, n_cols), dtype=np.float32)
        return weighted_matrix(np.concatenate(rows), np.concatenate(cols), np.concatenate(wts),
                               shape=(len(keys), n_cols))

    def advance(self, ts_ms: int) -> None:
        """Run every worker refresh whose boundary is at or before ``ts_ms`` (events before it applied)."""
        while self._next and self._next <= ts_ms:
            self._list(self._next)  # the worker reads items listed since its last batch
            self._refresh(self.log.index_at(self._next))
            self._next += self._step

    def _list(self, now_ms: int) -> None:
        """Give the content items listed by ``now_ms`` (and not folded in meanwhile) their content vector."""
        c = self.content
        if c is None or not len(self._waiting):
            return
        n = len(self._waiting) if c.arrival_ms is None else \
            int(np.searchsorted(c.arrival_ms[self._waiting], now_ms, side="right"))
        items, self._waiting = self._waiting[:n], self._waiting[n:]
        items = items[~self.has_vec[items]]
        self.item_factors[items] = c.vectors[items]
        self.has_vec[items] = True

    def _refresh(self, stop: int) -> None:
        if stop <= self.done:
            return
        log, m = self.log, self.model
        users = distinct(log.user[self.done:stop])
        hist = self._histories(users, self.users, log.item, stop, self.has_vec)
        self.user_factors[users] = fold_in_users(self.item_factors, m.gram, hist, m.regularization, m.alpha)
        if self.cfg.fold_new_items:
            items = distinct(log.item[self.done:stop])
            items = items[~m.known_items[items]]
            counts = np.array([len(self.items.before(i, stop)) for i in items.tolist()], dtype=np.int64)
            enough = counts >= self.cfg.new_item_min_interactions
            items, counts = items[enough], counts[enough]
            if len(items):
                every_user = np.ones(log.n_users, dtype=bool)
                inter = self._histories(items, self.items, log.user, stop, every_user)
                folded = fold_in_items(self.user_factors, m.user_gram, inter, m.regularization, m.alpha)
                self.item_factors[items] = self._with_content(items, folded, counts)
                self.has_vec[items] = True
        self.done = stop

    def _with_content(self, items: IntArray, folded: F32, counts: IntArray) -> F32:
        """Folded-in vectors blended with the items' content vectors by count, as the worker blends them."""
        c = self.content
        if c is None:
            return folded
        out = folded.copy()
        for r in np.flatnonzero(c.has[items]).tolist():
            out[r] = blend_by_count(c.vectors[items[r]], folded[r], int(counts[r]), c.prior)
        return out

    def user_vector(self, user: int, j: int) -> F32 | None:
        """The vector the worker holds for ``user`` just before event ``j`` (None: no vector at all)."""
        if len(self.users.before(user, j)) == len(self.users.before(user, self.start)):
            return self.user_factors[user] if self.model.known_users[user] else None
        hist = self._histories(np.array([user]), self.users, self.log.item, j, self.has_vec)
        return fold_in_users(self.item_factors, self.model.gram, hist, self.model.regularization, self.model.alpha)[0]
