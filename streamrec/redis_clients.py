"""How every process builds its Redis clients: for one Redis server, or for a Redis Cluster.

``STREAMREC_REDIS_CLUSTER=true``, or a ``redis+cluster://`` (``rediss+cluster://``) URL, makes the clients
redis-py's cluster clients (:class:`redis.cluster.RedisCluster`, :class:`redis.asyncio.cluster.RedisCluster`):
they learn every node from the one the URL names and send each command to the master of its key's hash
slot. A cluster has database 0 only. A command or transaction over keys of several slots is refused by a
cluster (CROSSSLOT): the key layout keeps what one transaction or script touches in one slot
(:class:`streamrec.store.Keys`, docs/operations.md#key-layout).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from streamrec.settings import Settings

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that name a Redis Cluster, and the scheme redis-py reads for each."""


def split_cluster_url(url: str) -> tuple[bool, str]:
    """``(names a cluster, the URL redis-py reads)``: ``redis+cluster://h:7000/0`` is ``(True,
    "redis://h:7000/0")``; any other URL is itself, not a cluster."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return (True, f"{plain}://{rest}") if plain else (False, url)


def is_cluster(settings: Settings, url: str | None = None) -> bool:
    """True when ``url`` (default ``settings.redis_url``) is used as a Redis Cluster."""
    return settings.redis_cluster or split_cluster_url(url or settings.redis_url)[0]


def sync_client(settings: Settings, url: str | None = None, **options: Any) -> redis.Redis:
    """A blocking client of ``url`` (default ``settings.redis_url``) with redis-py ``options``
    (``socket_timeout``, ``health_check_interval``, ...): a :class:`redis.cluster.RedisCluster` when
    :func:`is_cluster`, else a :class:`redis.Redis`.

    Typed as :class:`redis.Redis`, whose command methods the cluster client has too (redis-py's
    ``RedisClusterCommands``); what a cluster refuses is commands across hash slots, not the calls.
    """
    named_cluster, plain = split_cluster_url(url or settings.redis_url)
    if named_cluster or settings.redis_cluster:
        return cast(redis.Redis, RedisCluster.from_url(plain, **options))
    return redis.Redis.from_url(plain, **options)


def async_client(settings: Settings, url: str | None = None, **options: Any) -> aredis.Redis:
    """The asyncio twin of :func:`sync_client`: a :class:`redis.asyncio.cluster.RedisCluster` when
    :func:`is_cluster` (``max_connections`` is then per node), else a :class:`redis.asyncio.Redis`."""
    named_cluster, plain = split_cluster_url(url or settings.redis_url)
    if named_cluster or settings.redis_cluster:
        return cast(aredis.Redis, AsyncRedisCluster.from_url(plain, **options))
    return aredis.Redis.from_url(plain, **options)
