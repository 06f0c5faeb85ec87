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


def covisitation_pairs(rows_by_user: Mapping[str, tuple[F64, F64]], purchase: Mapping[str, Sequence[bool]],
                       items: IdMap, cfg: CovisConfig, now_ms: int) -> tuple[list[str], list[str], F64]:
    """The batch's co-visitation increments ``(a ids, b ids, weights decayed to now_ms)``, summed per pair.

    ``rows_by_user`` maps each user to (their history before the batch, the batch's applied events), both
    n×3 ``UserState`` rows (item, weight, ts) oldest first, taken before the history cap applies (a batch
    may hold more of one user's events than the cap); ``purchase`` flags each new row.
    """
    users, ts, item, later, emit = [], [], [], [], []
    for n, (u, (old_rows, new_rows)) in enumerate(rows_by_user.items()):
        tail = old_rows[len(old_rows) - min(len(old_rows), cfg.max_prev):]
        rows = np.concatenate([tail, new_rows])
        users.append(np.full(len(rows), n, dtype=np.int64))
        item.append(rows[:, 0].astype(np.int64))
        ts.append(rows[:, 2].astype(np.int64))
        later.append(np.concatenate([np.zeros(len(tail), dtype=bool), np.asarray(purchase[u], dtype=bool)]))
        emit.append(np.arange(len(rows)) >= len(tail))
    if not users:
        return [], [], np.zeros(0, dtype=np.float64)
    _, a, b, w = grouped_pairs(np.concatenate(users), np.concatenate(ts), np.concatenate(item),
                               np.concatenate(later), np.concatenate(emit), cfg, now_ms)
    a, b, w = aggregate_pairs(a, b, w)
    return items.ids_of(a.tolist()), items.ids_of(b.tolist()), w
