"""A batch's decoded events as flat per-event lists: what does not depend on Redis, built once per batch."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from models.weighting import WeightingConfig
from stream_processors.decode import DeadLetter, ValidEvent


class Batch:
    """The decoded events of one batch as flat per-event lists, plus per-partition facts."""

    def __init__(self, valid: Sequence[ValidEvent], dead: Sequence[DeadLetter], weighting: WeightingConfig) -> None:
        self.valid, self.dead, self.weighting = valid, list(dead), weighting
        self.n = len(valid)
        # One list comprehension per column: this runs for every event, and comprehensions cost about half
        # of one loop assigning a dozen lists by index.
        recs = [v[0] for v in valid]  # ValidEvent is a named tuple: (record, event)
        events = [v[1] for v in valid]
        self.topic: list[str] = [r.topic for r in recs]
        self.partition: list[int] = [r.partition for r in recs]
        self.offset: list[int] = [r.offset for r in recs]
        self.user: list[str] = [e.user_id for e in events]
        self.item: list[str] = [e.item_id for e in events]
        self.type: list[str] = [e.type._value_ for e in events]  # the plain str (the enum's .value is a property)
        self.ts: list[int] = [e.ts for e in events]
        self.id: list[bytes] = [e.event_id.bytes for e in events]
        self.context_category: list[str | None] = [_context_category(e.context) if e.context else None
                                                   for e in events]
        # weights as the history stores them (6 significant digits), so cache and Redis agree exactly
        stored = {name: float(f"{w:.6g}") for name, w in weighting.type_weights.items()}
        self.weight: list[float] = [stored[t] for t in self.type]
        top: dict[tuple[str, int], int] = {}
        for tp, off in zip(zip(self.topic, self.partition, strict=True), self.offset, strict=True):
            if off > top.get(tp, -1):
                top[tp] = off
        for d in dead:
            tp = (d.record.topic, d.record.partition)
            if d.record.offset > top.get(tp, -1):
                top[tp] = d.record.offset
        self.max_offsets: dict[tuple[str, int], int] = top
        self.users = list(dict.fromkeys(self.user))
        # The partition of each user's state: the record's (the processor dead-letters records that are not
        # where murmur2 puts their user, so all of a user's records share it).
        self.partition_of: dict[str, int] = dict(zip(self.user, self.partition, strict=True))
        self.parts: list[int] = sorted({p for _, p in top})  # every partition of the batch, dead letters' too
        self.events_of: dict[int, list[int]] = {p: [] for p in self.parts}  # partition -> event positions
        for i, p in enumerate(self.partition):
            self.events_of[p].append(i)
        self.users_of: dict[int, list[str]] = {p: [] for p in self.parts}  # partition -> its users, in order
        for u in self.users:
            self.users_of[self.partition_of[u]].append(u)
        self.applied_by_type: dict[tuple[str, str], int] = {}
        # Redis Cluster: partition -> (result, applied by type) of its transaction once committed (a retry of
        # the batch skips those partitions)
        self.committed: dict[int, tuple[Any, dict[tuple[str, str], int]]] = {}

    def without(self, done: Collection[int]) -> Batch:
        """This batch without the records of partitions ``done`` (Redis Cluster: committed by an earlier
        attempt), sharing its ``committed``."""
        rest = Batch([v for v in self.valid if v[0].partition not in done],
                     [d for d in self.dead if d.record.partition not in done], self.weighting)
        rest.committed = self.committed
        return rest


def _context_category(context: dict[str, Any] | None) -> str | None:
    value = context.get("category") if context else None
    return value if isinstance(value, str) and value else None
