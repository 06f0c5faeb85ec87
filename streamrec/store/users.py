"""Per-user state in Redis: the capped interaction history (newest first) and event counts.

A history entry is ``item \\x1f weight \\x1f ts_ms \\x1f type`` (ids cannot hold control characters, so the
separator is safe). The worker appends with LPUSH+LTRIM inside its MULTI/EXEC; readers use
:func:`read_histories`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
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
    k = store.keys
    pipe = store.client.pipeline(transaction=False)
    groups = k.by_partition(dict.fromkeys(users))
    for p, group in groups.items():
        pipe.hmget(k.user_events(p), group)
    counts: dict[str, int] = {}
    for group, raw in zip(groups.values(), pipe.execute(), strict=True):
        counts.update((u, int(r) if r is not None else 0) for u, r in zip(group, raw, strict=True))
    return {u: counts[u] for u in users}


def all_event_counts(store: RedisStore) -> dict[str, int]:
    """Every user's applied event count, partition by partition (for tools and tests: reads them all)."""
    k = store.keys
    out: dict[str, int] = {}
    for p in range(k.partitions):
        for user, raw in store.client.hscan_iter(k.user_events(p), count=5_000):
            out[user.decode() if isinstance(user, bytes) else str(user)] = int(raw)
    return out


def total_event_counts(store: RedisStore) -> tuple[int, int]:
    """(users with a count, sum of all counts) over every partition: for benchmarks and tools."""
    counts = all_event_counts(store)
    return len(counts), sum(counts.values())


# --- write-side helpers for the streaming worker ----------------------------------------------------
# A batch touches thousands of users. Instead of LPUSH+LTRIM+HINCRBY per user from the client (redis-py
# spends ~1 µs per argument packing, and Redis's per-command overhead dominates such tiny commands), one
# EVAL per batch does it inside Redis with as few commands as possible: one LPUSH per user, LTRIM only when
# the list outgrew the cap, and one HMGET + one HSET for all the counts.
# KEYS = [user_events(p), hist(user_1), ..., hist(user_n)]; ARGV = [cap, users joined by \x1e, entries_1, ...,
# entries_n] where entries_i are user i's encoded interactions, oldest first, joined by \x1e.
_APPEND_LUA = """
local cap, users, added = tonumber(ARGV[1]), {}, {}
for user in string.gmatch(ARGV[2], "[^\\30]+") do users[#users + 1] = user end
for i = 2, #KEYS do
  local entries = {}
  for entry in string.gmatch(ARGV[i + 1], "[^\\30]+") do entries[#entries + 1] = entry end
  local len = 0
  for start = 1, #entries, 4000 do
    len = redis.call('LPUSH', KEYS[i], unpack(entries, start, math.min(start + 3999, #entries)))
  end
  if len > cap then redis.call('LTRIM', KEYS[i], 0, cap - 1) end
  added[i - 1] = #entries
end
for start = 1, #users, 2000 do
  local stop = math.min(start + 1999, #users)
  local counts, args = redis.call('HMGET', KEYS[1], unpack(users, start, stop)), {}
  for j = start, stop do
    args[#args + 1] = users[j]
    args[#args + 1] = (tonumber(counts[j - start + 1]) or 0) + added[j]
  end
  redis.call('HSET', KEYS[1], unpack(args))
end
return #users
"""

ENTRY_SEP = "\x1e"


def encode_interactions(items: Sequence[str], weights: Sequence[float], ts_ms: Sequence[int],
                        types: Sequence[str]) -> list[str]:
    """:meth:`Interaction.encode` of many interactions at once, without building the objects (each type's
    weight formatted once: the worker encodes thousands per batch, and formatting a float is most of the
    cost of one)."""
    mids: dict[tuple[str, float], tuple[str, str]] = {}
    out = []
    for item, weight, ts, etype in zip(items, weights, ts_ms, types, strict=True):
        parts = mids.get((etype, weight))
        if parts is None:
            parts = mids[(etype, weight)] = (f"{SEP}{weight:.6g}{SEP}", f"{SEP}{etype}")
        out.append(f"{item}{parts[0]}{ts}{parts[1]}")
    return out


def append_histories(
    pipe: Pipeline, store: RedisStore, histories: Mapping[str, Sequence[Interaction | str]], cap: int, p: int
) -> None:
    """Queue on ``pipe`` (one EVAL): for every user of partition ``p`` push the interactions (oldest first;
    objects or :func:`encode_interactions` strings), keep the newest ``cap`` and add their number to the
    user's ``user_events`` count -- LPUSH, LTRIM and HINCRBY for a whole batch, in one slot."""
    users = [u for u, items in histories.items() if items]
    if not users:
        return
    k = store.keys
    packed = [ENTRY_SEP.join(i if isinstance(i, str) else i.encode() for i in histories[u]) for u in users]
    pipe.execute_command("EVAL", _APPEND_LUA, len(users) + 1, k.user_events(p), *(k.history(u, p) for u in users),
              cap, ENTRY_SEP.join(users), *packed)


# KEYS = [users, user_ts]; ARGV = [ts_ms, width, user ids joined by \x1e, vectors as one float32 blob].
_VECTORS_LUA = """
local ts, width, users = ARGV[1], tonumber(ARGV[2]), {}
for user in string.gmatch(ARGV[3], "[^\\30]+") do users[#users + 1] = user end
for start = 1, #users, 2000 do
  local vecs, stamps = {}, {}
  for j = start, math.min(start + 1999, #users) do
    vecs[#vecs + 1] = users[j]
    vecs[#vecs + 1] = string.sub(ARGV[4], (j - 1) * width + 1, j * width)
    stamps[#stamps + 1] = users[j]
    stamps[#stamps + 1] = ts
  end
  redis.call('HSET', KEYS[1], unpack(vecs))
  redis.call('HSET', KEYS[2], unpack(stamps))
end
return #users
"""


def write_user_vectors(
    pipe: Pipeline, store: RedisStore, version: str, users: Sequence[str], vectors: np.ndarray, ts_ms: int, p: int
) -> None:
    """Queue on ``pipe`` (one EVAL): set each user's (all of partition ``p``) vector (raw float32) in
    ``version`` and its ``user_ts``."""
    if not users:
        return
    block = np.ascontiguousarray(vectors, dtype="<f4")
    if block.shape[0] != len(users):
        raise ValueError(f"{len(users)} users but {block.shape[0]} vectors")
    k = store.keys
    pipe.execute_command("EVAL", _VECTORS_LUA, 2, k.user_vectors(version, p), k.user_ts(version, p), ts_ms,
              block.shape[1] * 4, ENTRY_SEP.join(users), block.tobytes())


def applied_offsets(store: RedisStore, group: str) -> dict[str, int]:
    """``topic:partition`` -> the highest offset ``group``'s workers applied, over every partition's key."""
    k = store.keys
    pipe = store.client.pipeline(transaction=False)
    for p in range(k.partitions):
        pipe.hgetall(k.offsets(group, p))
    return {(f.decode() if isinstance(f, bytes) else str(f)): int(v) for raw in pipe.execute() for f, v in raw.items()}
