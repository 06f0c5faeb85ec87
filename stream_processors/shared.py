"""A batch's effects on the keys shared by all users: trending, new items, co-visitation.

On one Redis they are queued in the batch's own MULTI/EXEC (:meth:`SharedEffects.queue`). A Redis Cluster
refuses a transaction over keys of several slots, and these keys are not in the partition's slot, so
there the batch's transaction for partition *p* instead appends the effects, numbered by *p*'s fence
value, to *p*'s outbox (``<prefix>:{p<n>}:outbox``, a list in *p*'s slot) -- committed exactly once
with the histories and offsets. :func:`drain` then applies each outbox entry to each kind of shared key
(one hash tag per kind: ``{t}``, ``{n}``, ``{c}``, so each is one slot) in one transaction per kind that
also records the entry's number for *p* in the kind's ``applied`` hash, and skips an entry that hash
already holds. An entry is applied once per kind whoever drains it, and in order: every drain starts at
the head of the outbox; a crash between kinds or before the entry is removed is finished by the next
drain (after the partition's next batch, or the worker's periodic sweep). Entries are msgspec JSON,
never pickles; vectors in them are raw little-endian float32 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import redis
from redis.client import Pipeline

from stream_processors import new_items as ni
from stream_processors.redis_io import wait_for_replicas
from streamrec.store import RedisStore, from_bytes, to_bytes
from streamrec.store.covisitation import queue_pairs
from streamrec.store.trending import add_counts_many

KINDS = ("t", "n", "c")  # trending and popular, new items, co-visitation: the hash tag of each kind's keys
MAX_ATTEMPTS = 50


class SharedEffects(msgspec.Struct, frozen=True):
    """What one batch (of one partition, on a cluster) adds to the shared keys."""

    counts: list[tuple[int, str, str | None, float]] = []  # (minute ts, item, category, weight) for trending
    version: str | None = None  # the model version of the new-item effects
    pending: dict[str, list[str]] = {}  # new item -> its new ``user \x1f weight`` entries
    folded: dict[str, bytes] = {}  # new item -> its folded vector (raw float32)
    covis_now: int = 0  # the batch's clock (ms): co-visitation increments are decayed to it
    covis: dict[str, tuple[list[str], list[float]]] = {}  # item -> (neighbours, increments decayed to covis_now)

    def empty(self) -> bool:
        return not (self.counts or self.pending or self.folded or self.covis)

    def queue(self, pipe: Pipeline, store: RedisStore, covis: tuple[float, int] | None, history_cap: int,
              kinds: Sequence[str] = KINDS) -> None:
        """Queue the effects of ``kinds`` on ``pipe``; ``covis`` is (half-life s, top n) when kept."""
        queue_effects(pipe, store, {(ts, item, cat): w for ts, item, cat, w in self.counts}, self.version,
                      self.pending, {it: from_bytes(v) for it, v in self.folded.items()}, self.covis_now,
                      {item: (ids, np.asarray(w, dtype=np.float64)) for item, (ids, w) in self.covis.items()},
                      covis, history_cap, kinds)

    def kinds(self) -> list[str]:
        """The kinds of shared keys these effects touch."""
        touched = [("t", bool(self.counts)), ("n", bool(self.version and (self.pending or self.folded))),
                   ("c", bool(self.covis))]
        return [kind for kind, yes in touched if yes]


def queue_effects(pipe: Pipeline, store: RedisStore, counts: Mapping[tuple[int, str, str | None], float],
                  version: str | None, pending: Mapping[str, Sequence[str]], folded: Mapping[str, np.ndarray],
                  covis_now: int, covis_rows: Mapping[str, tuple[Sequence[str], Any]],
                  covis: tuple[float, int] | None, history_cap: int, kinds: Sequence[str] = KINDS) -> None:
    """Queue on ``pipe`` a batch's writes to the shared keys of ``kinds``: trending counts (``t``), new items'
    interactions and folded vectors of ``version`` (``n``), co-visitation increments (``c``; ``covis`` is
    (half-life s, top n), None when the worker keeps none)."""
    if "t" in kinds and counts:
        add_counts_many(pipe, store, counts)
    if "n" in kinds and version is not None:
        if pending:
            ni.queue_pending(pipe, store, version, pending, history_cap)
        if folded:
            pipe.hset(store.keys.model(version, "new_items"), mapping={it: to_bytes(v) for it, v in folded.items()})
    if "c" in kinds and covis_rows and covis is not None:
        queue_pairs(pipe, store, covis_rows, covis_now, covis[0], covis[1])


def effects_of(counts: Mapping[tuple[int, str, str | None], float], version: str | None,
               pending: Mapping[str, Sequence[str]], folded: Mapping[str, np.ndarray], covis_now: int,
               covis: Mapping[str, tuple[Sequence[str], Any]]) -> SharedEffects:
    """The :class:`SharedEffects` of a batch's computed writes."""
    return SharedEffects(
        counts=[(ts, item, cat, float(w)) for (ts, item, cat), w in counts.items()], version=version,
        pending={it: list(e) for it, e in pending.items() if e},
        folded={it: np.ascontiguousarray(v, dtype="<f4").tobytes() for it, v in folded.items()},
        covis_now=covis_now,
        covis={it: (list(ids), np.asarray(w, dtype=np.float64).tolist()) for it, (ids, w) in covis.items()})


class Entry(msgspec.Struct, frozen=True):
    """One outbox entry: the effects of the partition's batch numbered ``seq`` (its fence value)."""

    seq: int
    effects: SharedEffects


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Entry)


def queue_outbox(pipe: Pipeline, store: RedisStore, p: int, seq: int, effects: SharedEffects) -> None:
    """Queue (in partition ``p``'s transaction) the entry ``seq`` of ``effects`` on ``p``'s outbox."""
    if not effects.empty():
        pipe.rpush(store.keys.outbox(p), _ENCODER.encode(Entry(seq, effects)))


def drain(store: RedisStore, parts: Sequence[int], covis: tuple[float, int] | None, history_cap: int,
          wait: tuple[int, int] = (0, 0)) -> int:
    """Apply every entry of the outboxes of ``parts`` to the shared keys once and remove it; returns how many
    entries were removed. The entries of all the partitions are merged, so each kind is one transaction
    whatever the number of partitions. ``wait``: (replicas, ms) to WAIT for after each transaction."""
    outboxes = [store.keys.outbox(p) for p in parts]
    pipe = store.client.pipeline(transaction=False)
    for key in outboxes:
        pipe.lrange(key, 0, -1)
    raw = dict(zip(parts, pipe.execute(), strict=True))
    entries = {p: [_DECODER.decode(r) for r in rows] for p, rows in raw.items() if rows}
    if not entries:
        return 0
    for kind in KINDS:
        touched = {p: es for p, es in entries.items() if any(kind in e.effects.kinds() for e in es)}
        if touched:
            _apply_kind(store, touched, kind, covis, history_cap, wait)
    pipe = store.client.pipeline(transaction=False)
    for p, rows in raw.items():
        for r in rows:
            pipe.lrem(store.keys.outbox(p), 1, r)
    return int(sum(pipe.execute()))


def _apply_kind(store: RedisStore, entries: Mapping[int, Sequence[Entry]], kind: str,
                covis: tuple[float, int] | None, history_cap: int, wait: tuple[int, int] = (0, 0)) -> None:
    """Apply the effects on one kind of shared keys of the entries (per partition, oldest first) that kind
    does not hold yet, in one transaction that records each partition's newest number."""
    marker = store.keys.applied(kind)
    node = store.node_client(marker)
    parts = list(entries)
    for _attempt in range(MAX_ATTEMPTS):
        with node.pipeline(transaction=True) as tx:
            try:
                tx.watch(marker)
                raw = tx.hmget(marker, [str(p) for p in parts])
                applied = {p: int(v) if v is not None else 0 for p, v in zip(parts, raw, strict=True)}
                todo = {p: [e for e in es if e.seq > applied[p]] for p, es in entries.items()}
                todo = {p: es for p, es in todo.items() if es}
                if not todo:
                    return
                tx.multi()
                merge([e.effects for es in todo.values() for e in es], covis).queue_kind(
                    tx, store, covis, history_cap, kind)
                tx.hset(marker, mapping={str(p): es[-1].seq for p, es in todo.items()})
                conn = tx.connection
                tx.execute()
                if wait[0] and conn is not None:  # replicated before the entries leave the outboxes
                    wait_for_replicas(conn, *wait)
                return
            except redis.WatchError:  # another worker drained the same partitions meanwhile: look again
                continue
    raise redis.WatchError(f"the {kind!r} keys kept changing: outbox entries of partitions {parts} not applied")


@dataclass(frozen=True)
class Merged:
    """Several entries' effects as one write per kind: trending weights summed, new items' entries per version
    in order, co-visitation increments summed per pair (re-expressed at the newest entry's time)."""

    counts: dict[tuple[int, str, str | None], float]
    versions: dict[str, tuple[dict[str, list[str]], dict[str, np.ndarray]]]
    covis_now: int
    covis: dict[str, dict[str, float]]

    def queue_kind(self, pipe: Pipeline, store: RedisStore, covis: tuple[float, int] | None, history_cap: int,
                   kind: str) -> None:
        """Queue the writes of one kind on ``pipe`` (:func:`queue_effects`)."""
        if kind == "n":
            for version, (pending, folded) in self.versions.items():
                queue_effects(pipe, store, {}, version, pending, folded, 0, {}, covis, history_cap, ("n",))
            return
        rows = {item: (list(row), np.fromiter(row.values(), dtype=np.float64, count=len(row)))
                for item, row in self.covis.items()}
        queue_effects(pipe, store, self.counts, None, {}, {}, self.covis_now, rows, covis, history_cap, (kind,))


def merge(effects: Sequence[SharedEffects], covis: tuple[float, int] | None) -> Merged:
    """The :class:`Merged` writes of ``effects``, taken in the order they were computed (``covis_now`` is the
    batch's clock), so the newest fold of a new item is the one kept."""
    effects = sorted(effects, key=lambda e: e.covis_now)
    counts: dict[tuple[int, str, str | None], float] = {}
    versions: dict[str, tuple[dict[str, list[str]], dict[str, np.ndarray]]] = {}
    now = max((e.covis_now for e in effects), default=0)
    pairs: dict[str, dict[str, float]] = {}
    for e in effects:
        for ts, item, cat, w in e.counts:
            counts[(ts, item, cat)] = counts.get((ts, item, cat), 0.0) + w
        if e.version is not None and (e.pending or e.folded):
            pending, folded = versions.setdefault(e.version, ({}, {}))
            for item, rows in e.pending.items():
                pending.setdefault(item, []).extend(rows)
            folded.update((item, from_bytes(v)) for item, v in e.folded.items())
        if e.covis and covis is not None:
            scale = 2.0 ** ((e.covis_now - now) / (covis[0] * 1000.0))  # an increment at e's time, seen at now
            for item, (ids, ws) in e.covis.items():
                row = pairs.setdefault(item, {})
                for n, w in zip(ids, ws, strict=True):
                    row[n] = row.get(n, 0.0) + w * scale
    return Merged(counts, versions, now, pairs)
