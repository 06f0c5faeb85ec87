"""`streamrec eval --cold-start`: item and user cold-start slices of the test replay.

* Metadata: ``--items FILE`` (catalogue rows, checked as ``streamrec catalog import`` checks them) and
  ``--users FILE`` (profiles) for ``--events`` logs; the Complete Journey preset uses its product table and
  household demographics (:func:`streamrec.datasets.completejourney_content`).
* Users: a fixed, seeded share (``--cold-users``) of the users with a profile and events in the test window
  lose every event before it (``hide_users``): they arrive in the test window with a profile and no history.
* The test replay runs the hybrid with cold start (``hybrid``: content vectors of items the model does not
  know, content neighbours, profile vectors; :mod:`models.cold_start`) beside the hybrid without it
  (``hybrid_without_content``, today's behaviour: wait for interactions) and every other method, on the
  sampled queries plus every query of the two slices:

  - ``item_cold_start``: queries holding an item without any event before the test model's training
    cut-off; only those items count as relevant (a hit on the basket's other items says nothing of cold
    start);
  - ``user_cold_start``: the first query of each hidden user (a profile, no history).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models import evaluation as ev
from models.cold_start import NEVER, ColdStart, ColdStartConfig, replay_cold_start
from models.content import Record
from models.eventlog import BatchModel, EventLog, IntArray, subset
from models.hybrid_replay import MethodConfig, answers, replay_answers
from models.signal_state import SignalState

Say = Any
SLICES = ("item_cold_start", "user_cold_start")


@dataclass
class ColdData:
    """Metadata and profiles per dense index, which users had their history hidden, and how long before its
    first event an item enters the catalogue."""

    items: list[Record | None]
    users: list[Record | None]
    hidden: npt.NDArray[np.bool_]
    arrival_days: float = 7.0


def _by_id(ids: np.ndarray | None, records: Mapping[str, Record]) -> list[Record | None]:
    if ids is None:
        return []
    return [records.get(str(i)) for i in ids.tolist()]


def read_items(path: Path, id_column: str) -> dict[str, Record]:
    """A catalogue file's valid rows as content records by item id (invalid rows are left out, as
    ``catalog import`` rejects them)."""
    from ops.catalog_import import ColumnMap, Report, entries, read_rows
    from streamrec.store.catalog import content_record

    report = Report()
    rows = entries(read_rows(path, None), ColumnMap(id=id_column), report)
    out: dict[str, Record] = {e["item_id"]: content_record(e) for e in rows}
    if not out:
        raise ValueError(f"{path.name}: no valid catalogue row (first reasons: {dict(report.reasons.most_common(3))})")
    return out


def read_users(path: Path, id_column: str) -> dict[str, Record]:
    """A profile file's rows as profiles by user id (every column but the id is an attribute)."""
    from ops.catalog_import import _plain, read_rows

    frame = read_rows(path, None)
    if id_column not in frame.columns:
        raise ValueError(f"{path.name}: no {id_column!r} column (give --user-id-column)")
    out: dict[str, Record] = {}
    for row in frame.to_dict("records"):
        uid = _plain(row.pop(id_column))
        if uid is not None:
            out[str(uid)] = {k: v for k, v in ((k, _plain(v)) for k, v in row.items()) if v is not None}
    return out


def load_cold_data(args: argparse.Namespace, ds: Any) -> tuple[list[Record | None], list[Record | None]]:
    """The metadata and profiles of ``ds``'s items and users, from the preset or ``--items``/``--users``."""
    if getattr(args, "dataset", None) == "completejourney":
        from streamrec.datasets import completejourney_content

        items: Mapping[str, Record]
        users: Mapping[str, Record]
        items, users = completejourney_content()
    elif args.items is None and args.users is None:
        raise ValueError("--cold-start needs --items and/or --users (or the completejourney preset)")
    else:
        items = read_items(args.items, args.item_id_column) if args.items else {}
        users = read_users(args.users, args.user_id_column) if args.users else {}
    return _by_id(ds.item_ids, items), _by_id(ds.user_ids, users)


def hide_users(log: EventLog, profiled: npt.NDArray[np.bool_], test_start_ms: int, test_end_ms: int, share: float,
               seed: int) -> tuple[EventLog, npt.NDArray[np.bool_]]:
    """Drop every event before the test window of a seeded ``share`` of the profiled users active in it."""
    hidden = np.zeros(log.n_users, dtype=bool)
    in_test = (log.ts_ms >= test_start_ms) & (log.ts_ms < test_end_ms)
    active = np.flatnonzero(np.bincount(log.user[in_test], minlength=log.n_users) > 0)
    pool = active[profiled[active]] if len(profiled) else active[:0]
    n = round(len(pool) * share)
    if n:
        hidden[np.random.default_rng(seed).choice(pool, size=n, replace=False)] = True
    keep = ~(hidden[log.user] & (log.ts_ms < test_start_ms))
    return subset(log, keep), hidden


def slice_queries(log: EventLog, lo: int, hi: int, exclude_seen: bool, hidden: npt.NDArray[np.bool_]
                  ) -> dict[str, tuple[IntArray, list[IntArray]]]:
    """Each slice's queries (event indices) and their relevant items, over every query of ``[lo, hi)``."""
    queries, users, relevant = ev.prequential_queries(log, lo, hi, exclude_seen)
    seen_before = np.bincount(log.item[:lo], minlength=log.n_items) > 0
    item_q, item_rel, user_q, user_rel = [], [], [], []
    first = np.full(log.n_users, -1, dtype=np.int64)
    for j, u, rel in zip(queries.tolist(), users.tolist(), relevant, strict=True):
        cold = rel[~seen_before[rel]]
        if len(cold):
            item_q.append(j)
            item_rel.append(cold)
        if hidden[u] and first[u] < 0:
            first[u] = j
            user_q.append(j)
            user_rel.append(rel)
    return {"item_cold_start": (np.array(item_q, dtype=np.int64), item_rel),
            "user_cold_start": (np.array(user_q, dtype=np.int64), user_rel)}


def arrivals(log: EventLog, lo: int, lead_days: float) -> IntArray:
    """When each item enters the catalogue: items with events before ``lo`` before the replay, the others
    ``lead_days`` before their first event (a shop lists a product shortly before it sells, not months
    before), items without any event never."""
    first = np.full(log.n_items, NEVER, dtype=np.int64)
    np.minimum.at(first, log.item, log.ts_ms)
    out = np.where(first < NEVER, first - int(lead_days * 86_400_000), NEVER)
    out[np.unique(log.item[:lo])] = np.iinfo(np.int64).min
    return out


def cold_state(log: EventLog, lo: int, model: BatchModel, data: ColdData, cfg: ColdStartConfig) -> ColdStart:
    """:func:`models.cold_start.replay_cold_start` for a model fitted on the events before ``lo``."""
    matrix = ev.interaction_matrix(log, 0, lo).tocsr()
    users_per_item = np.bincount(matrix.indices, minlength=log.n_items).astype(np.int64)
    items_per_user = np.diff(matrix.indptr).astype(np.int64)
    items = data.items or [None] * log.n_items
    users = data.users or [None] * log.n_users
    return replay_cold_start(items, users, model.item_factors, model.known_items, users_per_item,
                             model.user_factors, model.known_users, items_per_user, cfg,
                             arrivals(log, lo, data.arrival_days))


def replay_with_slices(log: EventLog, lo: int, hi: int, test: Any, state: SignalState, mc: MethodConfig,
                       model: BatchModel, data: ColdData, cfg: ColdStartConfig, say: Say
                       ) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """The test replay with cold start: (top-level metrics, slices, cold-start summary)."""
    k = test.rcfg.k
    cold = cold_state(log, lo, model, data, cfg)
    say(f"cold start: {cold.summary}")
    slices = slice_queries(log, lo, hi, test.rcfg.exclude_seen, data.hidden)
    main_q = test.queries
    every = np.unique(np.concatenate([main_q, *(q for q, _ in slices.values())]))
    rel_at = dict(zip(main_q.tolist(), test.relevant, strict=True))
    for q, rel in slices.values():
        for j, r in zip(q.tolist(), rel, strict=True):
            rel_at.setdefault(j, r)
    relevant = [rel_at[j] for j in every.tolist()]
    say(f"replaying {len(every):,} queries ({len(main_q):,} sampled, "
        + ", ".join(f"{len(q):,} {name}" for name, (q, _) in slices.items()) + ")")
    res = replay_answers(log, lo, hi, every, log.user[every], relevant, ev.catalogue(log, hi), state, (mc.trending,),
                         model, test.rcfg, answers(mc, True, content=True), say, cold)
    pos = {j: n for n, j in enumerate(every.tolist())}
    top = res.metrics(k, np.isin(every, main_q))
    out = {}
    for name, (q, rel) in slices.items():
        rows = np.array([pos[j] for j in q.tolist()], dtype=np.int64)
        part = ev.ReplayResult(res.ts_ms[rows], res.users[rows], rel, {m: r[rows] for m, r in res.recs.items()},
                               res.n_items)
        out[name] = {"queries": len(rows), "methods": part.metrics(k) if len(rows) else {}}
    return top, out, cold.summary
