"""Per-user state in Redis: the capped interaction history (newest first) and event counts.

A history entry is ``item \\x1f weight \\x1f ts_ms \\x1f type`` (ids cannot hold control characters, so the
separator is safe). The worker appends with LPUSH+LTRIM inside its MULTI/EXEC; readers use
:func:`read_histories`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.client import Pipeline

from streamrec.store import RedisStore

SEP = "\x1f"


@dataclass(frozen=True)
class Interaction:
    """One weighted interaction of a user."""

    item: str
    weight: float
    ts_ms: int
    type: str

    def encode(self) -> str:
        return f"{self.item}{SEP}{self.weight:.6g}{SEP}{self.ts_ms}{SEP}{self.type}"

    @staticmethod
    def decode(raw: bytes | str) -> Interaction:
        text = raw.decode() if isinstance(raw, bytes) else raw
        item, weight, ts, etype = text.split(SEP)
        return Interaction(item, float(weight), int(ts), etype)


def append_history(pipe: Pipeline, store: RedisStore, user: str, interactions: Sequence[Interaction], cap: int) -> None:
    """Queue on ``pipe``: push ``interactions`` (oldest first in the sequence) and keep the newest ``cap``."""
    key = store.keys.history(user)
    pipe.lpush(key, *(i.encode() for i in interactions))
    pipe.ltrim(key, 0, cap - 1)


def read_histories(
    store: RedisStore, users: Sequence[str], pipe: Pipeline | None = None
) -> dict[str, list[Interaction]]:
    """Each user's history, newest first (empty list for unknown users)."""
    if not users:
        return {}
    p = pipe if pipe is not None else store.client.pipeline(transaction=False)
    for user in users:
        p.lrange(store.keys.history(user), 0, -1)
    rows = p.execute()
    return {user: [Interaction.decode(r) for r in row] for user, row in zip(users, rows, strict=True)}


def event_counts(store: RedisStore, users: Sequence[str]) -> dict[str, int]:
    """How many events were applied per user (for exactly-once checks and the API)."""
    if not users:
        return {}
    raw = store.client.hmget(store.keys.user_events, list(users))
    return {u: int(r) if r is not None else 0 for u, r in zip(users, raw, strict=True)}
