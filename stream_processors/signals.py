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
from stream_processors.state import UserState

F64 = npt.NDArray[np.float64]


def covisitation_pairs(states: Mapping[str, UserState], by_user: Mapping[str, Sequence[int]],
                       purchase: Sequence[bool], items: IdMap, cfg: CovisConfig, now_ms: int
                       ) -> tuple[list[str], list[str], F64]:
    """The batch's co-visitation increments ``(a ids, b ids, weights decayed to now_ms)``, summed per pair.

    ``states`` are the users' histories after the batch (oldest first, the batch's events last),
    ``by_user`` the batch indices of each user's applied events in order, ``purchase`` per batch index.
    """
    users, ts, item, later, emit = [], [], [], [], []
    for n, (u, idx) in enumerate(by_user.items()):
        data = states[u].data
        new = min(len(idx), len(data))  # the cap can drop the oldest of a huge batch of one user
        rows = data[-(new + cfg.max_prev):]
        old = len(rows) - new
        users.append(np.full(len(rows), n, dtype=np.int64))
        item.append(rows[:, 0].astype(np.int64))
        ts.append(rows[:, 2].astype(np.int64))
        later.append(np.concatenate([np.zeros(old, dtype=bool), np.fromiter(
            (purchase[i] for i in idx[len(idx) - new:]), dtype=bool, count=new)]))
        emit.append(np.arange(len(rows)) >= old)
    if not users:
        return [], [], np.zeros(0, dtype=np.float64)
    _, a, b, w = grouped_pairs(np.concatenate(users), np.concatenate(ts), np.concatenate(item),
                               np.concatenate(later), np.concatenate(emit), cfg, now_ms)
    a, b, w = aggregate_pairs(a, b, w)
    return items.ids_of(a.tolist()), items.ids_of(b.tolist()), w
