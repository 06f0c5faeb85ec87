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

import hiredis
import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer

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


class CommandPacker:
    """redis-py's command packer without its Python pass over every argument.

    redis-py (``HiredisRespSerializer.pack``) encodes each argument in Python before handing the tuple to
    ``hiredis.pack_command``, about 0.4 µs per argument: with thousands of arguments in a worker batch's
    transaction (a history key and entries per user, neighbours per item) that was ~5 % of the worker's
    CPU. hiredis itself packs str (UTF-8), bytes, int and float, with the same bytes as redis-py's encoder
    (floats by ``repr``); anything else (a command name with spaces, which redis-py splits, or an argument
    hiredis refuses, such as a bool or None, which redis-py turns into a ``DataError``) goes through
    redis-py's own packer, unchanged. Stateless: one instance serves every connection.
    """

    def __init__(self) -> None:
        encode = Encoder("utf-8", "strict", False).encode
        self._plain = HiredisRespSerializer(PythonRespSerializer(6000, encode).pack, encode)

    def pack(self, *args: Any) -> list[bytes]:
        """The RESP bytes of one command, as a list of chunks (redis-py's packer interface)."""
        first = args[0]
        if (type(first) is str and " " not in first) or (type(first) is bytes and b" " not in first):
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return cast(list[bytes], self._plain.pack(*args))


PACKER = CommandPacker()


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
    # redis-py's cluster client does not pass a packer on to its nodes' connections: one Redis only
    return redis.Redis.from_url(plain, **{"command_packer": PACKER, **options})


def async_client(settings: Settings, url: str | None = None, **options: Any) -> aredis.Redis:
    """The asyncio twin of :func:`sync_client`: a :class:`redis.asyncio.cluster.RedisCluster` when
    :func:`is_cluster` (``max_connections`` is then per node), else a :class:`redis.asyncio.Redis`."""
    named_cluster, plain = split_cluster_url(url or settings.redis_url)
    if named_cluster or settings.redis_cluster:
        return cast(aredis.Redis, AsyncRedisCluster.from_url(plain, **options))
    return aredis.Redis.from_url(plain, **options)
