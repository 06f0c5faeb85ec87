"""The hybrid ranking's signals the worker keeps per batch, besides the user's history and vector.

Co-visitation: each applied event pairs with the user's previous few items (from the capped history, the
batch's earlier events of the same user included), exactly as :func:`models.covisitation.log_pairs` pairs
a time-ordered log offline; the batch's pairs are summed (one increment per pair) and written in the
batch's MULTI/EXEC by :func:`streamrec.store.covisitation.queue_pairs`, so they are applied exactly once
with the events. The repeat profile and the session are read from the history itself (the API derives
them), so they need no state of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from models.covisitation import CovisConfig, aggregate_pairs, grouped_pairs
from models.ids import IdMap

F64 = npt.NDArray[np.float64]


def covisitation_pairs(rows_by_user: Mapping[str, tuple[F64, F64]], purchase: Sequence[bool], items: IdMap,
                       cfg: CovisConfig, now_ms: int) -> dict[str, tuple[list[str], F64]]:
    """The batch's co-visitation increments, summed per pair: item -> (neighbour ids, weights at ``now_ms``).

    ``rows_by_user`` maps each user to (their history before the batch, the batch's applied events), both
    n×3 ``UserState`` rows (item, weight, ts) oldest first, taken before the history cap applies (a batch
    may hold more of one user's events than the cap); ``purchase`` flags the new rows, user after user.
    """
    parts: list[F64] = []
    tails, news = [], []
    for old_rows, new_rows in rows_by_user.values():  # one slice per user; everything else is vectorised
        tail = old_rows[len(old_rows) - min(len(old_rows), cfg.max_prev):]
        parts += (tail, new_rows)
        tails.append(len(tail))
        news.append(len(new_rows))
    if not parts:
        return {}
    rows = np.concatenate(parts)
    n_tail, n_new = np.array(tails), np.array(news)
    sizes = n_tail + n_new
    user = np.repeat(np.arange(len(sizes)), sizes)
    offset = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position inside the user's rows
    emit = offset >= np.repeat(n_tail, sizes)
    later = np.zeros(len(rows), dtype=bool)
    later[emit] = np.asarray(purchase, dtype=bool)
    _, a, b, w = grouped_pairs(user, rows[:, 2].astype(np.int64), rows[:, 0].astype(np.int64), later, emit, cfg,
                               now_ms)
    a, b, w = aggregate_pairs(a, b, w)  # sorted by (a, b): each item's neighbours are contiguous
    if not len(a):
        return {}
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    names = items.ids_of(b.tolist())
    return {items.id_of(int(a[lo])): (names[lo:hi], w[lo:hi])
            for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)}
