"""The worker's signal state during an offline replay: co-visitation tables, decayed popularity, histories.

:class:`SignalState` holds, for a replay window ``[start, stop)`` of an :class:`EventLog`, what the
worker would have in Redis just before event j: each co-visitation table (the events before ``start``
summed at once, then every window event's pairs added in order, as the worker adds a batch), the
decayed popularity of every item, and each user's history. It builds the :class:`models.ranking.Signal`
of every source from that state with the same functions the API uses. Pure numpy (no I/O).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
import numpy.typing as npt

from models.covisitation import CovisConfig, CovisTable, decay_units, log_pairs
from models.eventlog import EventLog, IntArray
from models.profile import repeat_profile, session
from models.rank_features import log_item_stats
from models.ranking import Signal, covisitation_signal, top_signal
from models.replay_state import Segments

F64 = npt.NDArray[np.float64]


class _Covis:
    """One co-visitation table plus the window's pairs still to add (sorted by the event that makes them)."""

    def __init__(self, log: EventLog, start: int, stop: int, cfg: CovisConfig, epoch_ms: int) -> None:
        args = (log.ts_ms, log.user, log.item, log.purchase, log.session, cfg, epoch_ms)
        _, a, b, w = log_pairs(*args, 0, start)
        self.table = CovisTable.from_pairs(log.n_items, cfg, epoch_ms, a, b, w)
        self.j, self.a, self.b, self.w = log_pairs(*args, start, stop)
        self.done = 0

    def advance(self, j: int) -> None:
        upto = int(np.searchsorted(self.j, j, side="left"))
        if upto > self.done:
            sl = slice(self.done, upto)
            self.table.add(self.a[sl], self.b[sl], self.w[sl])
            self.done = upto


class SignalState:
    """Co-visitation tables (one per config), decayed popularity (one per half-life) and user histories."""

    def __init__(self, log: EventLog, start: int, stop: int, covis: Sequence[CovisConfig] = (),
                 popular_half_lives: Sequence[float | None] = (None,)) -> None:
        self.log, self.start = log, start
        self.epoch_ms = int(log.ts_ms[min(start, len(log) - 1)]) if len(log) else 0
        self.users = Segments(log.user, log.n_users)
        self.covis = [_Covis(log, start, stop, c, self.epoch_ms) for c in covis]
        self.half_lives = tuple(popular_half_lives)
        self.popular = [np.zeros(log.n_items, dtype=np.float64) for _ in self.half_lives]
        self.applied = 0
        self.advance(start)

    @cached_property
    def item_stats(self) -> F64:
        """What the refit at ``start`` would publish with its version (the learned ranker's item columns);
        computed on first use: only the hybrid's replays read it."""
        log, start = self.log, self.start
        return log_item_stats(log.user[:start], log.item[:start], log.n_users, log.n_items)

    def advance(self, j: int) -> None:
        """Apply the events with index < ``j``."""
        if j > self.applied:
            sl = slice(self.applied, j)
            for h, pop in zip(self.half_lives, self.popular, strict=True):
                w = self.log.weight[sl].astype(np.float64)
                if h is not None:
                    w = w * decay_units(self.log.ts_ms[sl], self.epoch_ms, h)
                np.add.at(pop, self.log.item[sl], w)
            self.applied = j
        for c in self.covis:
            c.advance(j)

    def history(self, user: int, j: int, cap: int | None = None) -> IntArray:
        """Indices of the user's events before ``j`` (the newest ``cap``), oldest first."""
        return self.users.before(user, j, cap)

    def popular_signal(self, which: int, n: int, drop: IntArray) -> Signal:
        """The ``n`` most popular items (decayed with the ``which``-th half-life), ``drop`` skipped."""
        return top_signal(self.popular[which], n, drop)

    def repeat_signal(self, hist: IntArray, now_ms: int, half_life_s: float | None) -> Signal:
        """The user's decayed frequency per item over ``hist``."""
        log = self.log
        idx, score = repeat_profile(log.item[hist], log.ts_ms[hist], log.weight[hist], now_ms, half_life_s)
        return Signal(idx, score)

    def covis_signal(self, which: int, hist: IntArray, now_ms: int, n_items: int, decay: float) -> Signal:
        """Neighbours, in the ``which``-th table, of the user's newest ``n_items`` distinct items."""
        sess = session(self.log.item[hist], self.log.ts_ms[hist], now_ms, n_items, decay)
        return covisitation_signal(sess, self.covis[which].table.neighbours)


def fill(first: IntArray, fallback: IntArray, k: int) -> IntArray:
    """``first`` then the items of ``fallback`` not already in it, padded with -1 to ``k``."""
    out = np.full(k, -1, dtype=np.int64)
    head = first[:k]
    out[: len(head)] = head
    if len(head) < k:
        rest = fallback[(fallback >= 0) & ~np.isin(fallback, head)][: k - len(head)]
        out[len(head): len(head) + len(rest)] = rest
    return out


def ranked(sig: Signal, drop: IntArray) -> IntArray:
    """A signal's items by score (best first, ties to the lower index), ``drop`` skipped."""
    keep = (sig.score > 0) & ~np.isin(sig.idx, drop)
    idx, score = sig.idx[keep], sig.score[keep]
    return idx[np.lexsort((idx, -score))]
