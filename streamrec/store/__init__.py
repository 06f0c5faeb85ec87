"""The Redis boundary: every key streamrec keeps in Redis, and the reads and writes on them.

One lazily connected client per process (:class:`RedisStore`), key names in one place (:class:`Keys`),
and a module per concern (model versions, user state, catalogue, trending). Vectors are raw
little-endian float32 bytes; id lists and metadata are JSON. Nothing is ever pickled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import redis
from redis.cluster import RedisCluster

from streamrec.partitioner import partition_for
from streamrec.redis_clients import is_cluster, sync_client
from streamrec.settings import Settings

F32 = np.dtype("<f4")


class StoreUnavailable(RuntimeError):
    """Redis did not answer."""


def as_str(raw: Any) -> str:
    """A Redis reply (bytes, since clients do not decode) as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:secret@host:6379/0`` -> ``redis://:***@...``),
    for logs and terminals: a Redis URL may carry the server's password."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def to_bytes(vec: np.ndarray) -> bytes:
    """A vector or matrix as raw little-endian float32 bytes."""
    return np.ascontiguousarray(vec, dtype=F32).tobytes()


def from_bytes(raw: Any, factors: int | None = None) -> np.ndarray:
    """Raw little-endian float32 bytes back to a vector (or an n×factors matrix)."""
    arr = np.frombuffer(raw, dtype=F32)
    return arr.reshape(-1, factors) if factors else arr


class Keys:
    """Key names. Everything sits under ``prefix`` so deployments and tests can share one server.

    Everything the worker keeps about the users of Kafka partition *p* (histories, event counts, profiles,
    each version's vectors and their stamps, the applied offsets and the fence of *p*, the dedup sets) carries
    the hash tag ``{p<p>}``, so one batch's transaction for *p* touches one Redis Cluster slot and a read of
    one user is one slot. *p* is the partition Kafka's murmur2 partitioner gives the user id
    (:func:`streamrec.partitioner.partition_for`) on a topic of ``partitions`` partitions; the worker takes it
    from the record, readers compute it with :meth:`partition`. Global keys (model pointer, version parts
    shared by all users, catalogue) have no partition tag; what the worker writes for all users has a tag
    per kind -- ``{t}`` trending and popular, ``{c}`` co-visitation, ``{n}`` items new since the refit -- so
    on a Redis Cluster each kind's writes of a batch are one script on one slot (docs/operations.md).
    """

    def __init__(self, prefix: str, partitions: int = 1) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"a Redis prefix cannot hold '{{' or '}}' (they make hash tags): {prefix!r}")
        if partitions < 1:
            raise ValueError(f"a topic has at least one partition, not {partitions}")
        self.prefix = prefix
        self.partitions = partitions

    # the per-partition layout
    def partition(self, user: str) -> int:
        """The Kafka partition, and so the key slot, of ``user``'s state."""
        return partition_for(user, self.partitions)

    def tag(self, p: int) -> str:
        """``<prefix>:{p<p>}``: the start of every key of partition ``p``."""
        return f"{self.prefix}:{{p{p}}}"

    def by_partition(self, users: Iterable[str]) -> dict[int, list[str]]:
        """``users`` grouped by :meth:`partition` (each group in the order given)."""
        groups: dict[int, list[str]] = {}
        for u in users:
            groups.setdefault(self.partition(u), []).append(u)
        return groups

    @property
    def layout(self) -> str:
        """The layout the keys follow (JSON: ``format`` and ``partitions``), written by the worker."""
        return f"{self.prefix}:layout"

    # model versions (written by batch, read by worker and API)
    @property
    def current(self) -> str:
        return f"{self.prefix}:model:current"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:model:versions"

    def model(self, version: str, part: str) -> str:
        """``part`` is one of :data:`streamrec.store.models.VERSION_PARTS` (meta, items, item_factors, ...);
        the per-user parts are per partition: :meth:`user_vectors` and :meth:`user_ts`."""
        if part in PER_PARTITION_PARTS:
            raise ValueError(f"model part {part!r} is per partition: use Keys.user_vectors/user_ts")
        if part in NEW_ITEM_PARTS:
            return f"{self.prefix}:model:{version}:{{n}}:{part}"
        return f"{self.prefix}:model:{version}:{part}"

    def user_vectors(self, version: str, p: int) -> str:
        """The vectors of ``version`` of partition ``p``'s users (user -> raw float32)."""
        return f"{self.prefix}:model:{version}:{{p{p}}}:users"

    def user_ts(self, version: str, p: int) -> str:
        """When the worker last wrote each vector of :meth:`user_vectors` (user -> epoch ms)."""
        return f"{self.prefix}:model:{version}:{{p{p}}}:user_ts"

    def pending(self, version: str, item: str) -> str:
        """The worker's list of interactions with a new item of ``version`` (``user \\x1f weight`` entries)."""
        return f"{self.prefix}:model:{version}:{{n}}:pending:{item}"

    # per-user state (written by the worker, version independent)
    def history(self, user: str, p: int | None = None) -> str:
        """``user``'s capped history; ``p`` when known (the worker's record), else computed."""
        return f"{self.tag(self.partition(user) if p is None else p)}:hist:{user}"

    def user_events(self, p: int) -> str:
        """Applied events per user of partition ``p`` (user -> count)."""
        return f"{self.tag(p)}:user_events"

    def offsets(self, group: str, p: int) -> str:
        """The highest offset applied per ``topic:p`` field by ``group``'s workers."""
        return f"{self.tag(p)}:offsets:{group}"

    def fence(self, group: str, p: int) -> str:
        """Bumped by every batch of ``group`` touching partition ``p`` (the worker WATCHes it)."""
        return f"{self.tag(p)}:fence:{group}"

    def dedup(self, bucket: int, p: int) -> str:
        return f"{self.tag(p)}:dedup:{bucket}"

    def outbox(self, p: int) -> str:
        """Partition ``p``'s batches' effects on the shared keys, not applied yet (Redis Cluster only)."""
        return f"{self.tag(p)}:outbox"

    def applied(self, kind: str) -> str:
        """The newest outbox entry per partition applied to the shared keys of ``kind`` (``t``, ``n``, ``c``)."""
        return f"{self.prefix}:{{{kind}}}:applied"

    # batch runs and consumer-lag history (operability)
    @property
    def batch_last_run(self) -> str:
        return f"{self.prefix}:batch:last_run"

    @property
    def batch_last_failure(self) -> str:
        return f"{self.prefix}:batch:last_failure"

    def lag_window(self, group: str) -> str:
        return f"{self.prefix}:lag:{group}"

    # catalogue and popularity
    def item(self, item: str) -> str:
        return f"{self.prefix}:item:{{{item}}}"

    @property
    def unavailable(self) -> str:
        return f"{self.prefix}:unavailable"

    @property
    def item_category(self) -> str:
        return f"{self.prefix}:item_category"

    def trend(self, granularity: str, bucket: int, category: str | None = None) -> str:
        base = f"{self.prefix}:{{t}}:trend:{granularity}:{bucket}"
        return f"{base}:c:{category}" if category else base

    # user profiles (personal data: docs/api.md#what-is-stored-about-a-user), per partition like the rest
    def profiles(self, p: int) -> str:
        return f"{self.tag(p)}:profiles"

    @property
    def erased(self) -> str:
        """Users deleted since the last refit (user → deleted at, ms): the refit drops their interactions."""
        return f"{self.prefix}:erased"

    def popular(self, category: str | None = None) -> str:
        return f"{self.prefix}:{{t}}:popular:c:{category}" if category else f"{self.prefix}:{{t}}:popular"


PER_PARTITION_PARTS = ("users", "user_ts")
"""The parts of a model version kept per partition (:meth:`Keys.user_vectors`, :meth:`Keys.user_ts`)."""
NEW_ITEM_PARTS = ("pending_n", "new_items", "content_items", "content_features", "content_log")
"""The parts of a model version written with the pending lists of new items, by the worker and by the
catalogue's content updates (one script each): one tag, ``{n}``."""


class RedisStore:
    """A lazily connected Redis client plus the key schema. Cheap to build; connects on first command."""

    def __init__(self, settings: Settings, url: str | None = None, prefix: str | None = None) -> None:
        self.settings = settings
        self.url = url or settings.redis_url
        self.keys = Keys(prefix or settings.redis_prefix, settings.partitions)
        self._client: redis.Redis | None = None

    @property
    def cluster(self) -> bool:
        """True when this store talks to a Redis Cluster (:func:`streamrec.redis_clients.is_cluster`)."""
        return is_cluster(self.settings, self.url)

    @property
    def client(self) -> redis.Redis:
        """The process's blocking client (a cluster client for a Redis Cluster), created on first use."""
        if self._client is None:
            self._client = sync_client(self.settings, self.url, socket_timeout=5, socket_connect_timeout=3,
                                       health_check_interval=30)
        return self._client

    def node_client(self, key: str) -> redis.Redis:
        """The client of the server that holds ``key``'s slot: the store's own client on one Redis, the
        slot's master on a Redis Cluster (a transaction there runs on one node and one slot)."""
        if not self.cluster:
            return self.client
        cluster = cast(RedisCluster, self.client)
        return cast(redis.Redis, cluster.get_redis_connection(cluster.get_node_from_key(key)))

    def refresh_topology(self) -> None:
        """Re-learn which node serves which slot (after a failover or a slot move); no-op on one Redis."""
        if self.cluster and self._client is not None:
            cast(RedisCluster, self._client).nodes_manager.initialize()

    def mget(self, keys: Sequence[str]) -> list[Any]:
        """GET of each key, in one round trip per node: a cluster cannot MGET keys of several slots (fine for
        what this reads: keys written once, such as a version's parts)."""
        if self.cluster:
            return list(cast(RedisCluster, self.client).mget_nonatomic(keys))
        return list(self.client.mget(keys))

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def write_vectors(self, key: str, ids: Sequence[str], block: np.ndarray, chunk: int = 5_000) -> None:
        """``HSET key`` each id to its row of ``block`` as raw little-endian float32 bytes (pipelined chunks)."""
        rows = np.ascontiguousarray(block, dtype=F32)
        if rows.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {rows.shape[0]} vectors")
        for start in range(0, len(ids), chunk):
            part = rows[start : start + chunk]
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping={u: part[i].tobytes() for i, u in enumerate(ids[start : start + chunk])})
            pipe.execute()

    def delete_prefix(self, prefix: str | None = None) -> int:
        """Delete every key under ``<prefix>:`` (default: this store's prefix), scanning in pages; returns how
        many. For benchmarks and tools that clean up an isolated prefix, never the serving one."""
        pattern = f"{prefix if prefix is not None else self.keys.prefix}:*"
        keys = list(self.client.scan_iter(pattern, count=5_000))
        for i in range(0, len(keys), 1_000):
            self.client.unlink(*keys[i : i + 1_000])
        return len(keys)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
