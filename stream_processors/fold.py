"""A batch's fold-ins: its users against the current model version, and the new items that reached enough
interactions (:mod:`.new_items`). Called by :meth:`.batch.BatchPlan.compute`; reads through the batch's
transactions (:class:`~.redis_io.Transactions`), writes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.weighting import decay_factors, weighted_matrix
from stream_processors import new_items as ni
from stream_processors.columns import Batch
from stream_processors.redis_io import Transactions
from stream_processors.state import ModelState, UserState, WorkerState
from streamrec.store import from_bytes


@dataclass
class UserFold:
    """The batch's folded-in users (those with at least one interaction the version knows) and the time it took."""

    users: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 1), dtype=np.float32))
    wall_s: float = 0.0
    cpu_s: float = 0.0


@dataclass
class NewItemsSeen:
    """What the batch's reads found about its items the version does not hold."""

    nonbase: list[str]  # the batch's items not in the version's base
    pending_before: dict[str, int]  # item -> pending interactions before the batch
    remote_new: dict[str, np.ndarray]  # item -> vector another batch or worker already folded in


@dataclass
class NewItemFold:
    """The batch's new-item effects: pending entries to append (all, and per partition) and the items folded."""

    pending_add: dict[str, list[str]] = field(default_factory=dict)
    pending_of: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    folded: dict[str, np.ndarray] = field(default_factory=dict)


def fold_users(proc: WorkerState, model: ModelState, states: dict[str, UserState], seen: NewItemsSeen,
               new_items_len: int) -> UserFold:
    """Fold every user of ``states`` in (one batched solve), after taking in the new items others folded."""
    model.add_new_items(seen.remote_new)
    stale_s = time.monotonic() - model.solver_built_at
    if new_items_len > len(model.new_items) and stale_s > proc.new_item_refresh_s:
        from streamrec.store.models import get_new_items

        model.add_new_items(get_new_items(proc.store, model.version))  # learnt by other workers
    model.rebuild_solver_if_due(proc.new_item_refresh_s)
    if not states:
        return UserFold()
    started, started_cpu = time.perf_counter(), time.thread_time()
    users = list(states)
    of_users = [states[u] for u in users]
    lengths = np.fromiter((len(st.data) for st in of_users), dtype=np.int64, count=len(of_users))
    data = np.concatenate([st.data for st in of_users])
    rows = model.rows_of(data[:, 0].astype(np.int32))
    weights = data[:, 1]
    if proc.weighting.half_life_s is not None:
        weights = weights * decay_factors(data[:, 2], proc.clock(), proc.weighting.half_life_s)
    user_row = np.repeat(np.arange(len(users)), lengths)
    known = rows >= 0
    matrix = weighted_matrix(user_row[known], rows[known], weights[known], shape=(len(users), model.solver.n_items))
    has = np.diff(matrix.indptr) > 0
    vectors = model.solver.fold_in(matrix)
    return UserFold([u for u, h in zip(users, has.tolist(), strict=True) if h], vectors[has],
                    time.perf_counter() - started, time.thread_time() - started_cpu)


def fold_new_items(proc: WorkerState, model: ModelState, batch: Batch, tx: Transactions, apply_idx: Sequence[int],
                   seen: NewItemsSeen, users: UserFold) -> NewItemFold:
    """The pending entries of the applied events on new items, and the items that reached enough interactions
    folded in against the users' vectors (blended with their content vector for cold start)."""
    settings, keys = proc.settings, proc.store.keys
    out = NewItemFold(pending_add=defaultdict(list), pending_of=defaultdict(lambda: defaultdict(list)))
    fresh: dict[str, list[tuple[str, float]]] = defaultdict(list)
    nonbase = set(seen.nonbase)
    if not nonbase:
        return out
    for i in apply_idx:
        item = batch.item[i]
        if item in nonbase:
            entry = ni.encode_pending(batch.user[i], batch.weight[i])
            out.pending_add[item].append(entry)
            out.pending_of[batch.partition[i]][item].append(entry)
            fresh[item].append((batch.user[i], batch.weight[i]))
    before = seen.pending_before
    due = [it for it, rows in fresh.items()
           if ni.due_for_fold(before.get(it, 0), before.get(it, 0) + len(rows),
                              it in seen.remote_new or it in model.new_items,
                              settings.new_item_min_interactions, settings.history_cap)]
    if not due:
        return out
    lists = tx.read([("LRANGE", ni.pending_list_key(proc.store, model.version, it), 0, -1) for it in due])
    interactions = {
        it: ([ni.decode_pending(x) for x in old] + fresh[it])[
            -settings.history_cap :]
        for it, old in zip(due, lists, strict=True)
    }
    involved = {u for rows in interactions.values() for u, _ in rows}
    row_of = {u: n for n, u in enumerate(users.users)}
    vecs: dict[str, np.ndarray] = {u: users.vectors[row_of[u]] for u in involved if u in row_of}
    missing = sorted(involved - vecs.keys())
    if missing:  # users of the pending lists (any partition) without a vector in this batch
        groups = keys.by_partition(missing)
        replies = tx.read([("HMGET", keys.user_vectors(model.version, p), *g) for p, g in groups.items()])
        for g, raw in zip(groups.values(), replies, strict=True):
            vecs.update({u: from_bytes(v) for u, v in zip(g, raw, strict=True) if v})
    if model.user_gram is None:
        model.user_gram = ni.load_user_gram(proc.store, model.version, model.factors)
    out.folded = ni.fold_items(interactions, vecs, model.user_gram, settings.als_regularization, settings.als_alpha)
    if out.folded and settings.content_prior_interactions > 0:  # cold start: blend with metadata
        names = list(out.folded)
        raw = tx.read([("HMGET", keys.model(model.version, "content_items"), *names)])[0]
        out.folded = ni.blend_content(out.folded, dict(zip(names, raw, strict=True)),
                                      {it: len(interactions[it]) for it in names}, settings.content_prior_interactions)
    return out
