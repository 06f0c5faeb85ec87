"""A batch's decoded events as flat per-event lists: what does not depend on Redis, built once per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.weighting import WeightingConfig
from stream_processors.decode import DeadLetter, ValidEvent


class Batch:
    """The decoded events of one batch as flat per-event lists, plus per-partition facts."""

    def __init__(self, valid: Sequence[ValidEvent], dead: Sequence[DeadLetter], weighting: WeightingConfig) -> None:
        self.dead = list(dead)
        self.n = n = len(valid)
        self.topic: list[str] = [""] * n
        self.partition: list[int] = [0] * n
        self.offset: list[int] = [0] * n
        self.user: list[str] = [""] * n
        self.item: list[str] = [""] * n
        self.type: list[str] = [""] * n
        self.ts: list[int] = [0] * n
        self.id: list[bytes] = [b""] * n
        self.context_category: list[str | None] = [None] * n
        self.weight: list[float] = [0.0] * n
        # weights as the history stores them (6 significant digits), so cache and Redis agree exactly
        stored = {name: float(f"{w:.6g}") for name, w in weighting.type_weights.items()}
        self.max_offsets: dict[tuple[str, int], int] = {}
        top = self.max_offsets
        for i, v in enumerate(valid):  # one pass: this runs for every event
            rec, e = v.record, v.event
            self.topic[i], self.partition[i], self.offset[i] = rec.topic, rec.partition, rec.offset
            etype = e.type.value
            self.user[i], self.item[i], self.type[i], self.ts[i] = e.user_id, e.item_id, etype, e.ts
            self.id[i] = e.event_id.bytes
            self.weight[i] = stored[etype]
            if e.context:
                self.context_category[i] = _context_category(e.context)
            tp = (rec.topic, rec.partition)
            if rec.offset > top.get(tp, -1):
                top[tp] = rec.offset
        for d in dead:
            tp = (d.record.topic, d.record.partition)
            if d.record.offset > top.get(tp, -1):
                top[tp] = d.record.offset
        self.users = list(dict.fromkeys(self.user))
        self.applied_by_type: dict[tuple[str, str], int] = {}


def _context_category(context: dict[str, Any] | None) -> str | None:
    value = context.get("category") if context else None
    return value if isinstance(value, str) and value else None
