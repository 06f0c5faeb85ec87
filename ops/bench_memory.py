"""`streamrec bench memory`: Redis bytes per user and per item, written by the project's own writers.

Under a private prefix (removed after) it writes ``users`` synthetic users with full histories
(``history`` entries each, through :func:`streamrec.store.users.append_histories`, the worker's own script,
which also counts ``user_events``), then a vector and a timestamp per user for one model version
(:meth:`streamrec.store.RedisStore.write_vectors`, as the refit and the worker write them), then the
item factors of ``items`` items (:func:`streamrec.store.models.write_version`'s layout: one raw float32
blob and the id list). Each part is measured as the growth of Redis's ``used_memory`` (so the keys'
overhead, the dict and the allocator count, as they do in production) and divided by its count. The
last line (``--json``) is ``{"users", "history", "items", "factors", "bytes_per_user": {"history",
"counters", "vector", "total"}, "bytes_per_item": {"factors"}, "seconds"}``; docs/operations.md turns it
into the sizing table.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import write_user_factors
from streamrec.store.users import append_histories, encode_interactions

CHUNK = 2_000  # users per script call
POOL = 100_000  # distinct encoded history entries drawn from


@dataclass(frozen=True)
class MemoryConfig:
    users: int = 1_000_000
    history: int = 200
    items: int = 50_000
    factors: int = 64
    seed: int = 0


def _say(msg: str) -> None:
    print(f"[bench memory] {msg}", file=sys.stderr, flush=True)


def _used(store: RedisStore) -> int:
    """Redis's ``used_memory``: summed over the masters on a Redis Cluster."""
    if store.cluster:
        from redis.cluster import RedisCluster

        per_node = store.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return sum(int(info["used_memory"]) for info in per_node.values())
    return int(store.client.info("memory")["used_memory"])


def _entries(cfg: MemoryConfig, rng: np.random.Generator) -> list[str]:
    """Encoded history entries like the worker's (item ids of the catalogue, event-time stamps, types)."""
    items = [f"item-{i}" for i in rng.integers(0, cfg.items, POOL).tolist()]
    ts = (1_760_000_000_000 + rng.integers(0, 30 * 86_400_000, POOL)).tolist()
    types = rng.choice(["click", "click", "click", "purchase"], POOL).tolist()
    return encode_interactions(items, [1.0 if t == "click" else 5.0 for t in types], ts, types)


def _histories(store: RedisStore, cfg: MemoryConfig, users: list[str], rng: np.random.Generator) -> None:
    pool = _entries(cfg, rng)
    started = time.monotonic()
    for start in range(0, len(users), CHUNK):
        part = users[start : start + CHUNK]
        picks = rng.integers(0, POOL, (len(part), cfg.history))
        pipe = store.client.pipeline(transaction=False)
        rows = dict(zip(part, picks.tolist(), strict=True))
        for p, of_p in store.keys.by_partition(part).items():
            append_histories(pipe, store, {u: [pool[i] for i in rows[u]] for u in of_p}, cfg.history, p)
        pipe.execute()
        if (start // CHUNK) % 50 == 0:
            done = start + len(part)
            _say(f"histories: {done:,}/{len(users):,} users ({done / max(1e-9, time.monotonic() - started):,.0f}/s)")


def _counters_share(store: RedisStore, users: list[str]) -> int:
    """Bytes of the ``user_events`` counters alone: measured by removing a sample's fields and scaling."""
    sample = users[: min(len(users), 100_000)]
    before = _used(store)
    groups = store.keys.by_partition(sample)
    pipe = store.client.pipeline(transaction=False)
    for p, of_p in groups.items():
        for start in range(0, len(of_p), 10_000):
            pipe.hdel(store.keys.user_events(p), *of_p[start : start + 10_000])
    pipe.execute()
    freed = before - _used(store)
    pipe = store.client.pipeline(transaction=False)
    for p, of_p in groups.items():
        for start in range(0, len(of_p), 10_000):
            pipe.hset(store.keys.user_events(p), mapping=dict.fromkeys(of_p[start : start + 10_000], 200))
    pipe.execute()
    return round(freed / len(sample)) if sample else 0


def measure(settings: Settings, cfg: MemoryConfig) -> dict[str, Any]:
    """Write, measure, remove: the figures."""
    prefix = f"{settings.redis_prefix}:bench-memory-{uuid.uuid4().hex[:8]}"
    store = RedisStore(settings.model_copy(update={"redis_prefix": prefix}))
    rng = np.random.default_rng(cfg.seed)
    users = [f"user-{n:08d}" for n in range(cfg.users)]
    started = time.monotonic()
    try:
        base = _used(store)
        _say(f"{cfg.users:,} users x {cfg.history} history entries, under {store.keys.prefix}")
        _histories(store, cfg, users, rng)
        with_history = _used(store)
        counters = _counters_share(store, users)
        _say("user vectors and their timestamps (one model version)")
        version = "bench"
        for start in range(0, cfg.users, 50_000):
            part = users[start : start + 50_000]
            vectors = rng.standard_normal((len(part), cfg.factors)).astype(np.float32)
            write_user_factors(store, version, part, vectors)
            for p, of_p in store.keys.by_partition(part).items():
                store.client.hset(store.keys.user_ts(version, p), mapping=dict.fromkeys(of_p, 1_760_000_000_000))
        with_vectors = _used(store)
        _say(f"item factors of {cfg.items:,} items")
        factors = rng.standard_normal((cfg.items, cfg.factors)).astype("<f4")
        store.client.set(store.keys.model(version, "item_factors"), factors.tobytes())
        store.client.set(store.keys.model(version, "items"), "\n".join(f"item-{i}" for i in range(cfg.items)))
        with_items = _used(store)
    finally:
        _say("removing the bench's keys")
        store.delete_prefix()
        store.close()
    history_total = (with_history - base) / cfg.users
    per_user = {"history": round(history_total - counters), "counters": counters,
                "vector": round((with_vectors - with_history) / cfg.users)}
    per_user["total"] = sum(per_user.values())
    per_item = {"factors": round((with_items - with_vectors) / cfg.items)}
    figures = {"users": cfg.users, "history": cfg.history, "items": cfg.items, "factors": cfg.factors,
               "bytes_per_user": per_user, "bytes_per_item": per_item, "seconds": round(time.monotonic() - started, 1)}
    _say(f"bytes per user: {per_user}; per item (factors, one version): {per_item['factors']}")
    return figures


def run_memory(settings: Settings, cfg: MemoryConfig, as_json: bool) -> int:
    """:func:`measure`, the figures printed (the last line as JSON with ``as_json``)."""
    figures = measure(settings, cfg)
    if as_json:
        print(json.dumps(figures), flush=True)
    return 0
