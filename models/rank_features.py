"""Per-candidate features of a user's own history, for the learned ranker (:mod:`models.learned_ranker`).

The blend of :func:`models.ranking.rank` sees one number per source. What decides a repeat purchase is
richer: how many of the user's trips held the item, how long ago the last one was compared with the
user's usual gap for it ("overdue"), how many trips since. :func:`history_features` computes, for each
candidate, these from the history the API reads (items and timestamps, oldest first); a *trip* (basket)
is one distinct timestamp, as the evaluation's queries group a basket's lines. User-level columns (trips,
distinct items, idle time, mean gap between trips) are the same for every candidate of a request: they
let a tree model treat a new user's and a loyal customer's counts differently. Missing values are NaN
(an item never had has no "days since last"); tree models route NaN on their own. Pure numpy (no I/O).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.intsets import distinct

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
DAY_MS = 86_400_000.0
DECAY_DAYS = (7.0, 30.0, 90.0, 365.0)
ITEM_COLUMNS = ("count", "trips", "trip_share", "days_since_last", "days_since_first", "gap_days", "overdue",
                "trips_since_last", "in_last_trip", *(f"decayed_{d:g}d" for d in DECAY_DAYS), "decayed_relative")
USER_COLUMNS = ("user_trips", "user_distinct_items", "user_idle_days", "user_gap_days")
HISTORY_FEATURES = ITEM_COLUMNS + USER_COLUMNS


def history_features(cand: IntArray, items: npt.ArrayLike, ts_ms: npt.ArrayLike, now_ms: int) -> F64:
    """One row per candidate (``cand`` sorted ascending), the columns of :data:`HISTORY_FEATURES`."""
    n = len(cand)
    it = np.asarray(items, dtype=np.int64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    trips = distinct(ts)
    user = np.broadcast_to(np.array(_user_columns(it, trips, now_ms)), (n, len(USER_COLUMNS)))
    pos = np.minimum(np.searchsorted(cand, it), max(n - 1, 0)) if n else np.zeros(0, dtype=np.int64)
    hit = cand[pos] == it if n else np.zeros(0, dtype=np.bool_)
    row, t = pos[hit], ts[hit]
    if len(row) == 0:
        out = np.full((n, len(HISTORY_FEATURES)), np.nan)
        out[:, :3] = 0.0
        out[:, 8:len(ITEM_COLUMNS)] = 0.0
        out[:, len(ITEM_COLUMNS):] = user
        return out
    # one column at a time as whole arrays (np.where, not masked assignments): a request has a few
    # hundred candidates, where numpy's per-call overhead is the cost
    span = int(t.max()) + 1
    count = np.bincount(row, minlength=n).astype(np.float64)
    n_trips = np.bincount(distinct(row * span + t) // span, minlength=n).astype(np.float64)
    last = np.full(n, -np.inf)
    np.maximum.at(last, row, t.astype(np.float64))
    first = np.full(n, np.inf)
    np.minimum.at(first, row, t.astype(np.float64))
    had = count > 0
    since = np.where(had, (now_ms - last) / DAY_MS, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(n_trips >= 2, (last - first) / DAY_MS / (n_trips - 1), np.nan)
        overdue = since / np.maximum(gap, 1e-3)
    trips_since = np.where(had, len(trips) - np.searchsorted(trips, last, side="right"), np.nan)
    weight = np.exp2(-np.maximum(now_ms - t, 0)[None, :] / DAY_MS / np.array(DECAY_DAYS)[:, None])
    decayed = [np.bincount(row, weights=w, minlength=n) for w in weight]
    ref = decayed[DECAY_DAYS.index(90.0)]
    cols = [count, n_trips, n_trips / len(trips), since, np.where(had, (now_ms - first) / DAY_MS, np.nan), gap,
            overdue, trips_since, (last == trips[-1]).astype(np.float64), *decayed, ref / ref.max()]
    return np.hstack([np.column_stack(cols), user])


def _user_columns(items: IntArray, trips: IntArray, now_ms: int) -> list[float]:
    if len(trips) == 0:
        return [0.0, 0.0, np.nan, np.nan]
    gap = (trips[-1] - trips[0]) / DAY_MS / (len(trips) - 1) if len(trips) > 1 else np.nan
    return [float(len(trips)), float(len(distinct(items))), (now_ms - trips[-1]) / DAY_MS, float(gap)]


ITEM_STATS = ("item_log_events", "item_repeat_rate")


def item_stats(item: npt.ArrayLike, count: npt.ArrayLike, n_items: int) -> F64:
    """Per item (rows ``0..n_items-1``): log(1 + its events) and its repeat rate, from one entry per (user,
    item) with that pair's event ``count``. The repeat rate, ``(users with ≥ 2 events + 0.1) / (users + 1)``,
    says whether buyers come back for it (milk) or not (a kettle); smoothed so a rare item is not 0 or 1."""
    it = np.asarray(item, dtype=np.int64)
    cnt = np.asarray(count, dtype=np.float64)
    events = np.bincount(it, weights=cnt, minlength=n_items)[:n_items]
    users = np.bincount(it, minlength=n_items)[:n_items].astype(np.float64)
    again = np.bincount(it[cnt >= 2], minlength=n_items)[:n_items].astype(np.float64)
    out = np.column_stack([np.log1p(events), (again + 0.1) / (users + 1.0)])
    out[users == 0] = np.nan  # an item without events is unknown, as an item the served model lacks
    return out


def log_item_stats(user: npt.ArrayLike, item: npt.ArrayLike, n_users: int, n_items: int) -> F64:
    """:func:`item_stats` of an event log's (user, item) columns (what a refit of those events publishes)."""
    pairs, count = np.unique(np.asarray(user, dtype=np.int64) * n_items + np.asarray(item, dtype=np.int64),
                             return_counts=True)
    return item_stats(pairs % n_items, count, n_items)


def candidate_item_stats(cand: IntArray, stats: F64 | None) -> F64:
    """The :data:`ITEM_STATS` rows of the candidates; NaN for items the stats do not cover (new items)."""
    out = np.full((len(cand), len(ITEM_STATS)), np.nan)
    if stats is not None and len(stats):
        known = cand < len(stats)
        out[known] = stats[cand[known]]
    return out
