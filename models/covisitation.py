"""Item-to-item co-visitation ("viewed this, then viewed"), kept per event as the streaming worker keeps it.

An event of user u on item b at time t pairs with u's previous few events (newest first, at most
``max_prev``, within ``window_s`` and, when sessions are known, in the same session). The pair
a → b gets the weight

    w = distance_decay^(d - 1) · (purchase_factor if the later event is a purchase else 1)

(d = 1 for the event just before), and the reverse pair b → a gets ``backward_weight · w``. Pairs
fade with a half-life: a score is *stored* in decayed units, ``w · 2^((t - epoch) / half_life)``,
so an increment is a plain addition (Redis ``ZINCRBY``) and nothing is ever rescanned; the true
score at time ``now`` is ``stored · 2^(-(now - epoch) / half_life)``, the same factor for every
pair, so the order of the neighbours never changes with time and a ranking needs no rescaling.
:func:`rebase` moves the epoch forward when the exponents grow large (every few hundred half-lives).

Each item keeps its top ``top_n`` neighbours: a row is trimmed to ``top_n`` when it grows beyond
``2 · top_n`` entries, and reads take its best ``top_n``. The worker computes the pairs of a batch
with :func:`event_pairs` (one event against the user's history), sums them with
:func:`aggregate_pairs` and writes them; :func:`log_pairs` is the same computation over a whole
time-ordered log (the offline replay), and :class:`CovisTable` holds the rows in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
MAX_EXPONENT = 900.0  # 2^900 is far below float64's limit (2^1023); rebase before reaching it


@dataclass(frozen=True)
class CovisConfig:
    """How events pair up and how fast pairs fade (settings ``STREAMREC_COVIS_*``)."""

    window_s: float = 3_600.0
    max_prev: int = 5
    distance_decay: float = 0.7
    purchase_factor: float = 3.0
    backward_weight: float = 0.5
    half_life_s: float = 86_400.0
    top_n: int = 50

    def __post_init__(self) -> None:
        if self.max_prev < 1 or self.top_n < 1:
            raise ValueError("max_prev and top_n must be at least 1")
        if not (self.window_s > 0 and self.half_life_s > 0 and self.distance_decay > 0):
            raise ValueError("window_s, half_life_s and distance_decay must be positive")
        if self.purchase_factor < 0 or self.backward_weight < 0:
            raise ValueError("purchase_factor and backward_weight must be non-negative")


def decay_units(ts_ms: npt.ArrayLike, epoch_ms: int, half_life_s: float) -> F64:
    """``2^((ts - epoch) / half_life)``: multiply a weight at ``ts`` by this to store it (exponent clipped)."""
    rel = (np.asarray(ts_ms, dtype=np.float64) - float(epoch_ms)) / (1000.0 * half_life_s)
    return np.exp2(np.clip(rel, -MAX_EXPONENT, MAX_EXPONENT))


def decayed_value(stored: npt.ArrayLike, now_ms: int, epoch_ms: int, half_life_s: float) -> F64:
    """The true (decayed) score at ``now_ms`` of values stored in the units of ``epoch_ms``."""
    return np.asarray(stored, dtype=np.float64) / decay_units(now_ms, epoch_ms, half_life_s)


def rebase(stored: npt.ArrayLike, old_epoch_ms: int, new_epoch_ms: int, half_life_s: float) -> F64:
    """Stored values re-expressed in the units of ``new_epoch_ms`` (multiply by one common factor)."""
    return np.asarray(stored, dtype=np.float64) / decay_units(new_epoch_ms, old_epoch_ms, half_life_s)


def pair_weight(distance: npt.ArrayLike, later_is_purchase: npt.ArrayLike, cfg: CovisConfig) -> F64:
    """Weight of the pair (d-th previous item → new item), before decay."""
    d = np.asarray(distance, dtype=np.float64)
    w = np.power(cfg.distance_decay, d - 1.0)
    return w * np.where(np.asarray(later_is_purchase, dtype=bool), cfg.purchase_factor, 1.0)


def event_pairs(prev_items: npt.ArrayLike, prev_ts_ms: npt.ArrayLike, item: int, ts_ms: int, purchase: bool,
                cfg: CovisConfig, epoch_ms: int, prev_sessions: npt.ArrayLike | None = None,
                session: int | None = None) -> tuple[IntArray, IntArray, F64]:
    """The stored increments ``(a, b, stored weight)`` one new event adds, given the user's history.

    ``prev_*`` are the user's earlier events, oldest first (the worker's history reversed); only the
    newest ``max_prev`` inside the window (and the session, when given) pair with the event.
    """
    items = np.asarray(prev_items, dtype=np.int64)[::-1][: cfg.max_prev]
    ts = np.asarray(prev_ts_ms, dtype=np.int64)[::-1][: cfg.max_prev]
    dist = np.arange(1, len(items) + 1)
    ok = (ts_ms - ts <= cfg.window_s * 1000) & (items != item)
    if prev_sessions is not None and session is not None:
        ok &= np.asarray(prev_sessions, dtype=np.int64)[::-1][: cfg.max_prev] == session
    w = pair_weight(dist[ok], np.full(int(ok.sum()), purchase), cfg) * decay_units(ts_ms, epoch_ms, cfg.half_life_s)
    prev = items[ok]
    new = np.full(len(prev), item, dtype=np.int64)
    return _both_ways(prev, new, w, cfg)


def _both_ways(a: IntArray, b: IntArray, w: F64, cfg: CovisConfig) -> tuple[IntArray, IntArray, F64]:
    if cfg.backward_weight == 0:
        return a, b, w
    return np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([w, cfg.backward_weight * w])


def log_pairs(ts_ms: IntArray, user: IntArray, item: IntArray, purchase: npt.NDArray[np.bool_] | None,
              session: IntArray | None, cfg: CovisConfig, epoch_ms: int, start: int, stop: int
              ) -> tuple[IntArray, IntArray, IntArray, F64]:
    """:func:`event_pairs` for every event of ``[start, stop)`` of a time-ordered log, vectorised.

    Returns ``(event index, a, b, stored weight)`` sorted by event index: the pairs event j adds are
    known once j is applied. Previous events may lie before ``start``.
    """
    lo = start
    if start > 0:  # the previous events of the window's users that can still pair (within window_s)
        lo = int(np.searchsorted(ts_ms, ts_ms[start] - int(cfg.window_s * 1000), side="left"))
    idx = np.arange(lo, stop)
    order = idx[np.lexsort((idx, user[lo:stop]))]  # by user, then time (index) order
    later = purchase[order] if purchase is not None else np.zeros(len(order), dtype=bool)
    pos, a, b, w = grouped_pairs(user[order], ts_ms[order], item[order], later, order >= start, cfg, epoch_ms,
                                 session[order] if session is not None else None)
    j = order[pos]
    srt = np.argsort(j, kind="stable")
    return j[srt], a[srt], b[srt], w[srt]


def grouped_pairs(user: IntArray, ts_ms: IntArray, item: IntArray, purchase: npt.NDArray[np.bool_],
                  emit: npt.NDArray[np.bool_], cfg: CovisConfig, epoch_ms: int, session: IntArray | None = None
                  ) -> tuple[IntArray, IntArray, IntArray, F64]:
    """The pairs of events laid out user by user, each user's events in time order (vectorised).

    The event at position p pairs with the ``max_prev`` events before it of the same user (within the
    window and, when given, the session), if ``emit[p]``; ``purchase[p]`` says whether it is a purchase.
    Returns ``(position, a, b, stored weight)``, reverse pairs included. The streaming worker lays out each
    user's last history items followed by the batch's new events (``emit`` on the new ones only).
    """
    out_p, out_a, out_b, out_d = [], [], [], []
    for d in range(1, cfg.max_prev + 1):
        ok = np.zeros(len(user), dtype=bool)
        ok[d:] = (user[d:] == user[:-d]) & (ts_ms[d:] - ts_ms[:-d] <= cfg.window_s * 1000) & (item[d:] != item[:-d])
        if session is not None:
            ok[d:] &= session[d:] == session[:-d]
        ok &= emit
        pos = np.flatnonzero(ok)
        out_p.append(pos)
        out_a.append(item[pos - d])
        out_b.append(item[pos])
        out_d.append(np.full(len(pos), d))
    p, a, b, d_arr = (np.concatenate(x).astype(np.int64) for x in (out_p, out_a, out_b, out_d))
    w = pair_weight(d_arr, purchase[p], cfg) * decay_units(ts_ms[p], epoch_ms, cfg.half_life_s)
    a2, b2, w2 = _both_ways(a, b, w, cfg)
    return (np.concatenate([p, p]) if cfg.backward_weight != 0 else p), a2, b2, w2


def aggregate_pairs(a: IntArray, b: IntArray, w: F64) -> tuple[IntArray, IntArray, F64]:
    """Sum the increments of identical pairs (one write per pair and batch), sorted by (a, b)."""
    if len(a) == 0:
        return a, b, w
    n = int(max(a.max(), b.max())) + 1
    keys, inv = np.unique(a * n + b, return_inverse=True)
    return keys // n, keys % n, np.bincount(inv, weights=w).astype(np.float64)


def _best(idx: IntArray, val: F64, n: int) -> tuple[IntArray, F64]:
    """The ``n`` largest values, best first; ties to the lower index."""
    order = np.lexsort((idx, -val))[:n]
    return idx[order], val[order]


class CovisTable:
    """Every item's top neighbours with stored (decayed-unit) scores, in memory (the replay's copy of Redis).

    Rows built by :meth:`from_pairs` live in a CSR matrix (trimmed to ``top_n``); a row touched by
    :meth:`add` moves into a dict and is trimmed to ``top_n`` whenever it exceeds ``2 · top_n``.
    """

    def __init__(self, n_items: int, cfg: CovisConfig, epoch_ms: int,
                 base: sp.csr_matrix | None = None) -> None:
        self.n_items, self.cfg, self.epoch_ms = n_items, cfg, epoch_ms
        self.base = base if base is not None else sp.csr_matrix((n_items, n_items), dtype=np.float64)
        self.rows: dict[int, dict[int, float]] = {}

    @classmethod
    def from_pairs(cls, n_items: int, cfg: CovisConfig, epoch_ms: int, a: IntArray, b: IntArray, w: F64
                   ) -> CovisTable:
        """A table holding the sum of the given increments, each row trimmed to its ``top_n``."""
        m = sp.coo_matrix((w, (a, b)), shape=(n_items, n_items)).tocsr()
        m.sum_duplicates()
        counts = np.diff(m.indptr)
        if counts.max(initial=0) > cfg.top_n:
            rows, cols, vals = [], [], []
            for r in np.flatnonzero(counts).tolist():
                lo, hi = m.indptr[r], m.indptr[r + 1]
                c, v = _best(m.indices[lo:hi].astype(np.int64), m.data[lo:hi], cfg.top_n)
                rows.append(np.full(len(c), r))
                cols.append(c)
                vals.append(v)
            m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n_items, n_items))
        return cls(n_items, cfg, epoch_ms, m)

    def add(self, a: IntArray, b: IntArray, w: F64) -> None:
        """Add stored increments (as ``ZINCRBY``), trimming rows that grew beyond ``2 · top_n``."""
        limit = 2 * self.cfg.top_n
        for x, y, v in zip(a.tolist(), b.tolist(), w.tolist(), strict=True):
            row = self.rows.get(x)
            if row is None:
                lo, hi = self.base.indptr[x], self.base.indptr[x + 1]
                row = self.rows[x] = dict(zip(self.base.indices[lo:hi].tolist(), self.base.data[lo:hi].tolist(),
                                              strict=True))
            row[y] = row.get(y, 0.0) + v
            if len(row) > limit:
                keep = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.cfg.top_n]
                self.rows[x] = dict(keep)

    def neighbours(self, item: int) -> tuple[IntArray, F64]:
        """``item``'s best ``top_n`` neighbours and their stored scores, best first."""
        row = self.rows.get(item)
        if row is None:
            lo, hi = self.base.indptr[item], self.base.indptr[item + 1]
            idx, val = self.base.indices[lo:hi].astype(np.int64), self.base.data[lo:hi].astype(np.float64)
        else:
            idx = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
            val = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        return _best(idx, val, self.cfg.top_n)
