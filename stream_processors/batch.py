"""One attempt at applying a batch: the reads, the selection, the fold-in and the MULTI/EXEC.

:class:`BatchPlan` is one optimistic attempt at applying a :class:`~.columns.Batch` (the decoded events
as flat lists, built once per batch; see :mod:`.processor` for the steps and retry policy).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream_processors import new_items as ni
from stream_processors.columns import Batch
from stream_processors.decode import DeadLetter
from stream_processors.fold import NewItemFold, NewItemsSeen, UserFold, fold_new_items, fold_users
from stream_processors.redis_io import (
    Transactions,
    dedup_buckets,
    dedup_check_command,
    queue_dedup_add,
    queue_offsets_max,
)
from stream_processors.result import BatchResult
from stream_processors.shared import effects_of, queue_effects, queue_outbox
from stream_processors.signals import covisitation_pairs
from stream_processors.state import UserState, WorkerState
from streamrec.events import now_ms
from streamrec.store import from_bytes
from streamrec.store.users import Interaction, append_histories, encode_interactions, write_user_vectors

CATEGORY_CACHE_S = 300.0  # catalogue categories are re-read this often


class BatchPlan:
    """One attempt: ``read`` -> ``select`` -> ``compute`` -> ``write`` -> ``commit``."""

    def __init__(self, proc: WorkerState, batch: Batch, tx: Transactions) -> None:
        self.proc = proc
        self.batch = batch
        self.tx = tx
        self.keys = proc.store.keys
        self.settings = proc.settings
        self.model = proc.model
        self.current: str | None = None
        self.dead_letters: list[DeadLetter] = []
        # On a Redis Cluster the plan is computed once for the whole batch, and written in one transaction per
        # partition (:class:`~.redis_io.Transactions`), each on its partition's slot; the effects on the keys
        # shared by all users go through each partition's outbox (stream_processors.shared).
        self.cluster = proc.store.cluster
        self.seq: dict[int, int] = {}  # cluster: each partition's fence value after this batch (numbers its entry)
        self.first_commit = True

    # ------------------------------------------------------------------------------------------ read
    def read(self) -> None:
        batch, keys, proc = self.batch, self.keys, self.proc
        # A user's events all sit in one partition number (both topics are keyed by user and have the same
        # partition count), so a per-partition fence key, bumped by every batch, detects another worker
        # applying events of the same users concurrently (during a rebalance). WATCHing each user's
        # history key would do too, but Redis's WATCH is quadratic in the number of keys.
        group = self.settings.consumer_group
        self.fences = {p: keys.fence(group, p) for p in batch.parts}
        self.tx.watch(self.fences, keys.current)
        self.fields = {p: [(t, q) for t, q in batch.max_offsets if q == p] for p in batch.parts}
        now_s = proc.clock() // 1000
        self.bucket, check, self.bucket_expire = dedup_buckets(now_s, self.settings.dedup_window_s)
        if time.monotonic() - proc.categories_at > CATEGORY_CACHE_S:
            proc.categories.clear()
            proc.categories_at = time.monotonic()
        self.uncat = [i for i in dict.fromkeys(batch.item) if i not in proc.categories]
        self.nonbase = [i for i in dict.fromkeys(batch.item) if self.model and not self.model.is_base_item(i)]
        if self.nonbase and self.cluster:  # their pending counts must include this worker's earlier batches
            proc.settle_shared()
        local: list[tuple[Any, ...]] = [("GET", fence) for fence in self.fences.values()] if self.cluster else []
        for p, fields in self.fields.items():
            local.append(("HMGET", keys.offsets(group, p), *(f"{t}:{p}" for t, _ in fields)))
        with_events = [p for p in batch.parts if batch.events_of[p]]
        for p in with_events:
            ids = b"".join(batch.id[i] for i in batch.events_of[p])
            local.append(dedup_check_command([keys.dedup(x, p) for x in check], ids))
            local.append(("HMGET", keys.user_events(p), *batch.users_of[p]))
        shared: list[tuple[Any, ...]] = [("GET", keys.current)]
        if self.uncat:
            shared.append(("HMGET", keys.item_category, *self.uncat))
        if self.model and self.nonbase:
            v = self.model.version
            shared.append(("HMGET", ni.pending_count_key(proc.store, v), *self.nonbase))
            shared.append(("HMGET", keys.model(v, "new_items"), *self.nonbase))
        if self.model:
            shared.append(("HLEN", keys.model(self.model.version, "new_items")))
        r = s = iter(self.tx.read(local + shared))
        if self.cluster:
            fence_values = list(itertools.islice(r, len(self.fences)))
            self.seq = {p: int(x or 0) + 1 for p, x in zip(self.fences, fence_values, strict=True)}
        self.applied: dict[tuple[str, int], int] = {}
        for fields in self.fields.values():
            self.applied.update((tp, int(x) if x is not None else -1) for tp, x in zip(fields, next(r), strict=True))
        self.dups: set[int] = set()
        self.counts: dict[str, int] = {}
        for p in with_events:
            where = batch.events_of[p]
            self.dups.update(where[int(i) - 1] for i in next(r))
            self.counts.update((u, int(c) if c is not None else 0)
                               for u, c in zip(batch.users_of[p], next(r), strict=True))
        raw = next(s)
        self.current = raw.decode() if raw else None
        if self.uncat:
            proc.categories.update((i, c.decode() if c else None) for i, c in zip(self.uncat, next(s), strict=True))
        self.pending_before: dict[str, int] = {}
        self.remote_new: dict[str, np.ndarray] = {}
        if self.model and self.nonbase:
            self.pending_before = {i: int(c or 0)
                                   for i, c in zip(self.nonbase, next(s), strict=True)}
            self.remote_new = {i: from_bytes(vec) for i, vec in zip(self.nonbase, next(s), strict=True) if vec}
        self.new_items_len = int(next(s)) if self.model else 0

    # ------------------------------------------------------------------------------------------ select
    def select(self) -> None:
        """Decide what to apply: skip redelivered records and duplicate event ids."""
        batch = self.batch
        applied_at = self.applied
        seen: set[bytes] = set()
        self.apply_idx: list[int] = []
        self.redelivered: dict[int, int] = defaultdict(int)  # partition -> records skipped
        self.duplicates: dict[int, int] = defaultdict(int)
        for i in range(batch.n):
            if batch.offset[i] <= applied_at[(batch.topic[i], batch.partition[i])]:
                self.redelivered[batch.partition[i]] += 1
            elif i in self.dups or batch.id[i] in seen:
                self.duplicates[batch.partition[i]] += 1
            else:
                seen.add(batch.id[i])
                self.apply_idx.append(i)
        self.dead_letters = []
        for d in batch.dead:
            if d.record.offset > applied_at[(d.record.topic, d.record.partition)]:
                self.dead_letters.append(d)
            else:
                self.redelivered[d.record.partition] += 1

    # ------------------------------------------------------------------------------------------ compute
    def compute(self) -> None:
        batch, proc = self.batch, self.proc
        by_user: dict[str, list[int]] = defaultdict(list)
        for i in self.apply_idx:
            by_user[batch.user[i]].append(i)
        self.by_user = by_user
        cached = {u: proc.users.get(u, self.counts[u]) for u in by_user}
        # Histories not cached at the user's current count (first sight, evicted, or another worker applied
        # events meanwhile) are read in a second round trip on the watched connection; new users have none.
        need = [u for u, st in cached.items() if st is None and self.counts[u] > 0]
        part = self.batch.partition_of
        rows = self.tx.read([("LRANGE", self.keys.history(u, part[u]), 0, -1) for u in need])
        histories = {u: [Interaction.decode(x) for x in row] for u, row in zip(need, rows, strict=True)}
        cap = self.settings.history_cap
        add = proc.items.add
        # the applied events user by user (in order within each user): one row each of interned item,
        # weight, ts, so every user's new rows are one slice
        order = [i for idx in by_user.values() for i in idx]
        self.order = order
        item, weight, ts = batch.item, batch.weight, batch.ts
        new_rows = np.empty((len(order), 3), dtype=np.float64)
        new_rows[:, 0] = [add(item[i]) for i in order]
        new_rows[:, 1] = [weight[i] for i in order]
        new_rows[:, 2] = [ts[i] for i in order]
        self.states: dict[str, UserState] = {}
        rows_by_user: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        start = 0
        for u, idx in by_user.items():
            old = cached[u]
            if old is None:
                old = UserState.from_history(self.counts[u], histories.get(u, []), proc.items)
            added = new_rows[start : start + len(idx)]
            start += len(idx)
            rows_by_user[u] = (old.data, added)
            self.states[u] = old.extended(added, cap)
        self.now = proc.clock()
        self._covisitation(rows_by_user)
        self.users_fold, self.new_fold = UserFold(), NewItemFold()
        if self.model is not None:
            seen = NewItemsSeen(self.nonbase, self.pending_before, self.remote_new)
            self.users_fold = fold_users(proc, self.model, self.states, seen, self.new_items_len)
            self.new_fold = fold_new_items(proc, self.model, batch, self.tx, self.apply_idx, seen, self.users_fold)
        self.vec_users, self.vectors = self.users_fold.users, self.users_fold.vectors
        self.pending_add, self.pending_of, self.folded_items = (
            self.new_fold.pending_add, self.new_fold.pending_of, self.new_fold.folded)

    def _covisitation(self, rows_by_user: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The batch's co-visitation increments (``covis_of``): per partition on a cluster (each partition's go
        in its own outbox entry, applied exactly once with its events), else all under the first partition."""
        batch, proc = self.batch, self.proc
        self.covis_of: dict[int, dict[str, tuple[list[str], np.ndarray]]] = {}
        if proc.covis is None:
            return
        groups: dict[int, list[str]] = defaultdict(list)
        for u in self.by_user:
            groups[batch.partition_of[u] if self.cluster else batch.parts[0]].append(u)
        for p, users in groups.items():
            purchase = [batch.type[i] == "purchase" for u in users for i in self.by_user[u]]
            self.covis_of[p] = covisitation_pairs({u: rows_by_user[u] for u in users}, purchase, proc.items,
                                                  proc.covis, self.now)

    # ------------------------------------------------------------------------------------------ write
    def write(self) -> None:
        """Queue the writes, each on its partition's transaction (all in one on one Redis)."""
        batch, keys, proc, settings = self.batch, self.keys, self.proc, self.settings
        pipe = self.tx.writes
        order = self.order
        entries = encode_interactions([batch.item[i] for i in order], [batch.weight[i] for i in order],
                                      [batch.ts[i] for i in order], [batch.type[i] for i in order])
        part = batch.partition_of
        histories: dict[int, dict[str, list[str]]] = defaultdict(dict)  # partition -> user -> entries
        start = 0
        for u, idx in self.by_user.items():
            histories[part[u]][u] = entries[start : start + len(idx)]
            start += len(idx)
        for p, of_p in histories.items():
            append_histories(pipe(p), proc.store, of_p, settings.history_cap, p)
        self.stamp = now_ms()
        if self.model is not None and self.vec_users:
            rows: dict[int, list[int]] = defaultdict(list)
            for n, u in enumerate(self.vec_users):
                rows[part[u]].append(n)
            for p, idx in rows.items():
                write_user_vectors(pipe(p), proc.store, self.model.version, [self.vec_users[n] for n in idx],
                                   self.vectors[idx], self.stamp, p)
        self.applied_of: dict[int, list[int]] = defaultdict(list)  # partition -> applied event positions
        for i in self.apply_idx:
            self.applied_of[batch.partition[i]].append(i)
        self._write_shared()
        for p, idx in self.applied_of.items():
            queue_dedup_add(pipe(p), keys.dedup(self.bucket, p), b"".join(batch.id[i] for i in idx),
                            self.bucket_expire)
        for p, fence in self.fences.items():
            pipe(p).incr(fence)
        for p, fields in self.fields.items():
            queue_offsets_max(pipe(p), keys.offsets(settings.consumer_group, p),
                              {f"{t}:{q}": batch.max_offsets[(t, q)] for t, q in fields
                               if batch.max_offsets[(t, q)] > self.applied[(t, q)]})

    def _trending(self, idx: list[int]) -> dict[tuple[int, str, str | None], float]:
        """The trending increments of the events at ``idx``: (minute, item, category) -> weight."""
        batch, cats = self.batch, self.proc.categories
        counts: dict[tuple[int, str, str | None], float] = defaultdict(float)
        for i in idx:
            item = batch.item[i]
            counts[(batch.ts[i] - batch.ts[i] % 60_000, item, cats.get(item) or batch.context_category[i])] += (
                batch.weight[i]
            )
        return counts

    def _write_shared(self) -> None:
        """The batch's effects on the keys shared by all users (trending, new items, co-visitation): queued in
        the transaction on one Redis; on a cluster, each partition's in its outbox (:mod:`.shared`), the new
        items folded in the first partition's (committed first: see docs/operations.md)."""
        proc, parts = self.proc, self.batch.parts
        version = self.model.version if self.model is not None else None
        covis = (proc.covis.half_life_s, proc.covis.top_n) if proc.covis is not None else None
        if not self.cluster:
            queue_effects(self.tx.writes(parts[0]), proc.store, self._trending(self.apply_idx), version,
                          self.pending_add, self.folded_items, self.now, self.covis_of.get(parts[0], {}), covis,
                          self.settings.history_cap)
            return
        for p in parts:
            effects = effects_of(self._trending(self.applied_of.get(p, [])), version, self.pending_of.get(p, {}),
                                 self.folded_items if p == parts[0] else {}, self.now, self.covis_of.get(p, {}))
            queue_outbox(self.tx.writes(p), proc.store, p, self.seq[p], effects)

    # ------------------------------------------------------------------------------------------ commit
    def commit(self) -> BatchResult:
        """EXEC (raises WatchError when a watched key changed; on a cluster, per partition, each WAITing for a
        replica); returns what the transactions committed in this attempt did."""
        s, total = self.settings, BatchResult()
        self.tx.execute(s.redis_wait_replicas if self.cluster else 0, s.redis_wait_ms,
                        lambda parts: total.merge(self._committed(parts)))
        return total

    def _committed(self, parts: Sequence[int]) -> BatchResult:
        """Bookkeeping once the transaction of ``parts`` succeeded: the user cache, the new items and
        (on a cluster) ``batch.committed``; returns their figures."""
        write_ms = now_ms()
        batch, proc, first = self.batch, self.proc, self.first_commit
        self.first_commit = False
        mine = set(parts)
        part = batch.partition_of
        proc.users.put_many((u, st) for u, st in self.states.items() if part[u] in mine)
        if first and self.model is not None and self.folded_items:
            self.model.add_new_items(self.folded_items)
        idx = [i for p in parts for i in self.applied_of.get(p, [])]
        by_type: dict[tuple[str, str], int] = defaultdict(int)
        for i in idx:
            by_type[(batch.topic[i], batch.type[i])] += 1
        dead: dict[str, int] = defaultdict(int)
        for d in self.dead_letters:
            if d.record.partition in mine:
                dead[d.reason] += 1
        ts = np.fromiter((batch.ts[i] for i in idx), dtype=np.int64, count=len(idx))
        result = BatchResult(
            applied=len(idx), redelivered=sum(self.redelivered[p] for p in parts),
            duplicates=sum(self.duplicates[p] for p in parts), dead_letters=dict(dead),
            users=sum(1 for u in self.states if part[u] in mine),
            vectors=sum(1 for u in self.vec_users if part[u] in mine),
            new_items=len(self.folded_items) if first else 0, version=self.model.version if self.model else None,
            foldin_s=self.users_fold.wall_s if first else 0.0,
            foldin_cpu_s=self.users_fold.cpu_s if first else 0.0,
            write_ms=write_ms, freshness_ms=write_ms - ts)
        batch.applied_by_type = dict(by_type)
        if self.cluster:
            for p in parts:
                batch.committed[p] = (result, batch.applied_by_type)
        return result
