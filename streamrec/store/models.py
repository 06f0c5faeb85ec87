"""Model versions in Redis: published atomically by the batch job, read by the worker and the API.

A version's keys (``<p>:model:<v>:meta|items|item_factors|gram``) are written once and never changed,
then one MULTI/EXEC points ``<p>:model:current`` at it. A reader reads ``current`` and then that
version's immutable keys, so it sees the old version or the new one, never a mix. User vectors of a
version (``<p>:model:<v>:{p<n>}:users``, one hash per Kafka partition) and items folded in since the
refit (``...:new_items``) are hashes the worker keeps updating. Old versions are unlinked after a grace
period; the previous one is kept for ``streamrec batch rollback``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.store import PER_PARTITION_PARTS, RedisStore, as_str, from_bytes, to_bytes

# Every key a version owns (the worker's per-item pending keys expire by themselves).
VERSION_PARTS = ("meta", "items", "item_factors", "gram", "users", "user_ts", "new_items", "user_gram", "pending_n",
                 "item_stats",  # the learned ranker's item statistics (models.rank_features)
                 # cold start (streamrec.store.content): the fitted featurizers and regressions, item features
                 "content_model", "content_idf", "content_coef", "content_features", "content_items", "content_log",
                 "content_neighbours",
                 "profile_model", "profile_idf", "profile_coef")
ITEM_STATS_COLUMNS = 2  # models.rank_features.ITEM_STATS


@dataclass(frozen=True)
class ModelVersion:
    """The immutable part of a published model version."""

    version: str
    meta: dict[str, Any]
    item_ids: list[str]
    item_factors: np.ndarray  # n_items × factors, float32
    gram: np.ndarray  # factors × factors, YᵀY of item_factors
    item_index: dict[str, int] = field(default_factory=dict, compare=False)
    # n_items × ITEM_STATS_COLUMNS (models.rank_features.item_stats), for the learned ranker; None: a version
    # published before it had them
    item_stats: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.item_index:
            object.__setattr__(self, "item_index", {item: i for i, item in enumerate(self.item_ids)})

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])


def current_version(store: RedisStore) -> str | None:
    """The version serving now, or None before the first publish."""
    raw = store.client.get(store.keys.current)
    return as_str(raw) if raw else None


def load_model(store: RedisStore, version: str | None = None) -> ModelVersion | None:
    """Read a version (default: the current one), or None when there is none."""
    version = version or current_version(store)
    if version is None:
        return None
    k = store.keys
    meta, items, factors, gram, stats = store.mget(
        [k.model(version, "meta"), k.model(version, "items"), k.model(version, "item_factors"),
         k.model(version, "gram"), k.model(version, "item_stats")]
    )
    if meta is None or items is None or factors is None or gram is None:
        return None  # removed after its grace period, or a publish that never completed
    meta_d = json.loads(meta)
    f = int(meta_d["factors"])
    item_ids = json.loads(items)
    return ModelVersion(
        version=version,
        meta=meta_d,
        item_ids=item_ids,
        item_factors=from_bytes(factors, f).reshape(len(item_ids), f),
        gram=from_bytes(gram, f),
        item_stats=_item_stats(stats if isinstance(stats, bytes) else None, len(item_ids)),
    )


def _item_stats(raw: bytes | None, n_items: int) -> np.ndarray | None:
    """The stored item statistics (float32 rows), or None when absent or of another shape."""
    if raw is None or len(raw) != 4 * ITEM_STATS_COLUMNS * n_items:
        return None
    return from_bytes(raw).reshape(n_items, ITEM_STATS_COLUMNS).astype(np.float64)


def new_version_name(now: float | None = None) -> str:
    """A sortable, unique version name such as ``v20261122T214501123``."""
    t = time.time() if now is None else now
    return time.strftime("v%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t * 1000) % 1000:03d}"


def write_version(
    store: RedisStore,
    version: str,
    meta: dict[str, Any],
    item_ids: Sequence[str],
    item_factors: np.ndarray,
    gram: np.ndarray,
    user_ids: Sequence[str],
    user_factors: np.ndarray,
    item_stats: np.ndarray | None = None,
) -> None:
    """Write every key of a version without making it current (see :func:`activate`); ``item_stats`` are
    :func:`models.rank_features.item_stats` rows in ``item_ids`` order."""
    k = store.keys
    meta = {**meta, "version": version, "factors": int(item_factors.shape[1]),
            "n_items": len(item_ids), "n_users": len(user_ids), "vectors_at_ms": int(time.time() * 1000)}
    # No per-user ``user_ts`` here: a vector without one was written with the version (meta
    # ``vectors_at_ms``); the worker and the re-fold stamp the vectors they write. Halves the hash writes.
    store.client.unlink(*user_keys(store, version), k.model(version, "new_items"))
    write_user_factors(store, version, user_ids, user_factors)
    pipe = store.client.pipeline(transaction=False)
    pipe.set(k.model(version, "items"), json.dumps(list(item_ids)))
    pipe.set(k.model(version, "item_factors"), to_bytes(item_factors))
    pipe.set(k.model(version, "gram"), to_bytes(gram))
    if item_stats is not None:
        pipe.set(k.model(version, "item_stats"), to_bytes(np.asarray(item_stats, dtype=np.float32)))
    pipe.set(k.model(version, "meta"), json.dumps(meta))  # last: a version without meta is incomplete
    pipe.execute()


def activate(store: RedisStore, version: str) -> None:
    """Make ``version`` current in one MULTI/EXEC and record it in the version list, then bump every
    partition's fence: a worker batch that read the old pointer and has not committed yet is computed again
    against ``version`` (on a Redis Cluster the worker cannot WATCH the pointer, which is in another slot)."""
    k = store.keys
    if not store.client.exists(k.model(version, "meta")):
        raise KeyError(f"model version {version} is not in Redis")
    if store.cluster:  # the two keys are in different slots: the pointer first (a crash before ZADD leaves
        store.client.set(k.current, version)  # the current version unlisted, which nothing removes)
        store.client.zadd(k.versions, {version: time.time()})
    else:
        pipe = store.client.pipeline(transaction=True)
        pipe.set(k.current, version)
        pipe.zadd(k.versions, {version: time.time()})
        pipe.execute()
    pipe = store.client.pipeline(transaction=False)
    for p in range(k.partitions):
        pipe.incr(k.fence(store.settings.consumer_group, p))
    pipe.execute()


def list_versions(store: RedisStore) -> list[tuple[str, float]]:
    """(version, activated_at epoch s), oldest first."""
    rows = store.client.zrange(store.keys.versions, 0, -1, withscores=True)
    return [(as_str(v), float(s)) for v, s in rows]  # type: ignore[str-unpack]


def previous_version(store: RedisStore) -> str | None:
    """The version that served before the current one and still exists (the rollback target)."""
    current = current_version(store)
    older = [v for v, _ in list_versions(store) if v != current]
    for v in reversed(older):
        if store.client.exists(store.keys.model(v, "meta")):
            return v
    return None


def cleanup_versions(store: RedisStore, grace_s: float, now: float | None = None) -> list[str]:
    """Unlink versions superseded more than ``grace_s`` ago, keeping current and the previous one."""
    now = time.time() if now is None else now
    versions = list_versions(store)
    current = current_version(store)
    keep = {current, previous_version(store)}
    removed = []
    for (v, _), (_, superseded_at) in itertools.pairwise(versions):
        if v in keep or now - superseded_at < grace_s:
            continue
        store.client.unlink(*version_keys(store, v))
        store.client.zrem(store.keys.versions, v)
        removed.append(v)
    return removed


def version_keys(store: RedisStore, version: str) -> list[str]:
    """Every key ``version`` owns (the pending lists of its new items expire by themselves)."""
    k = store.keys
    return [*(k.model(version, part) for part in VERSION_PARTS if part not in PER_PARTITION_PARTS),
            *user_keys(store, version)]


def user_keys(store: RedisStore, version: str) -> list[str]:
    """Every per-partition key of ``version``'s users: vectors and their stamps."""
    k = store.keys
    return [key for p in range(k.partitions) for key in (k.user_vectors(version, p), k.user_ts(version, p))]


def write_user_factors(store: RedisStore, version: str, user_ids: Sequence[str], user_factors: np.ndarray) -> None:
    """Write ``version``'s vectors of ``user_ids`` (rows of ``user_factors``), each in its partition's hash."""
    if len(user_ids) != user_factors.shape[0]:
        raise ValueError(f"{len(user_ids)} ids but {user_factors.shape[0]} vectors")
    k = store.keys
    rows: dict[int, list[int]] = {}
    for n, u in enumerate(user_ids):
        rows.setdefault(k.partition(u), []).append(n)
    for p, idx in rows.items():
        store.write_vectors(k.user_vectors(version, p), [user_ids[n] for n in idx], user_factors[idx])


def get_user_vectors(store: RedisStore, version: str, users: Sequence[str]) -> list[np.ndarray | None]:
    """Each user's vector in ``version`` (None for users without one)."""
    if not users:
        return []
    k = store.keys
    groups = k.by_partition(dict.fromkeys(users))
    pipe = store.client.pipeline(transaction=False)
    for p, group in groups.items():
        pipe.hmget(k.user_vectors(version, p), group)
    found: dict[str, Any] = {}
    for group, raw in zip(groups.values(), pipe.execute(), strict=True):
        found.update(zip(group, raw, strict=True))
    return [from_bytes(found[u]) if found[u] is not None else None for u in users]


def get_new_items(store: RedisStore, version: str) -> dict[str, np.ndarray]:
    """Items folded in by the worker since ``version`` was fitted."""
    raw = store.client.hgetall(store.keys.model(version, "new_items"))
    return {as_str(k): from_bytes(v) for k, v in raw.items()}


def all_user_vectors(store: RedisStore, version: str) -> dict[str, np.ndarray]:
    """Every user vector of ``version``, partition by partition (for tools and tests: this reads them all)."""
    out: dict[str, np.ndarray] = {}
    for p in range(store.keys.partitions):
        for user, raw in store.client.hscan_iter(store.keys.user_vectors(version, p), count=5_000):
            out[as_str(user)] = from_bytes(raw)
    return out
