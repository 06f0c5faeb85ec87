"""Which Redis client a process builds: the single Redis's, or a cluster client (flag or cluster URL)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer

from streamrec.redis_clients import PACKER, async_client, is_cluster, split_cluster_url, sync_client
from streamrec.settings import Settings
from streamrec.store import RedisStore


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:16379/0", (False, "redis://127.0.0.1:16379/0")),
    ("rediss://:pw@host:6380", (False, "rediss://:pw@host:6380")),
    ("unix:///run/redis.sock", (False, "unix:///run/redis.sock")),
    ("redis+cluster://127.0.0.1:17000/0", (True, "redis://127.0.0.1:17000/0")),
    ("REDIS+CLUSTER://node-1:7000", (True, "redis://node-1:7000")),
    ("rediss+cluster://default:p@ss@node-1:7000", (True, "rediss://default:p@ss@node-1:7000")),
])
def test_cluster_urls_are_told_from_others(url: str, expected: tuple[bool, str]) -> None:
    assert split_cluster_url(url) == expected


def test_the_flag_or_the_url_makes_it_a_cluster() -> None:
    assert not is_cluster(Settings(redis_url="redis://h:6379/0"))
    assert is_cluster(Settings(redis_url="redis://h:6379/0", redis_cluster=True))
    assert is_cluster(Settings(redis_url="redis+cluster://h:7000/0"))
    assert is_cluster(Settings(), url="redis+cluster://h:7000")
    assert RedisStore(Settings(redis_cluster=True)).cluster and not RedisStore(Settings()).cluster


def test_a_single_redis_keeps_redis_py_s_plain_clients_and_options() -> None:
    s = Settings(redis_url="redis://127.0.0.1:1/3")
    client = sync_client(s, socket_timeout=5, health_check_interval=30)
    assert type(client) is redis.Redis
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"], kwargs["health_check_interval"]) == (1, 3, 5, 30)
    assert type(RedisStore(s).client) is redis.Redis
    aclient = async_client(s, max_connections=64)
    assert type(aclient) is aredis.Redis and aclient.connection_pool.max_connections == 64
    asyncio.run(aclient.aclose())


def test_the_async_cluster_client_is_built_without_connecting() -> None:
    for s in (Settings(redis_url="redis+cluster://127.0.0.1:1/0"),
              Settings(redis_url="redis://127.0.0.1:1/0", redis_cluster=True)):
        client = async_client(s, socket_connect_timeout=1.0, max_connections=64)
        assert isinstance(client, AsyncRedisCluster)
        assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [("127.0.0.1", 1)]
        asyncio.run(client.aclose())


def _default_packer() -> HiredisRespSerializer:
    encode = Encoder("utf-8", "strict", False).encode
    return HiredisRespSerializer(PythonRespSerializer(6000, encode).pack, encode)


@pytest.mark.parametrize("args", [
    ("EVAL", "return 1", 2, "k:{3}:a", "k:{3}:b", 200, 0.1, 1 / 3, -0.0, 5e-324, 1e22, 2**62, -7),
    (b"HSET", "ключ", "é\x1e\x00", b"\xff\xfe raw bytes", "", b""),
    ("HSET", "k", memoryview(b"a view"), bytearray(b"an array")),
    ("CLIENT SETNAME", "a name"),  # redis-py splits a command name with spaces: so does this one
    ("SET", "k", np.float64(0.5)),  # numpy scalars go as redis-py sends them
])
def test_the_fast_packer_sends_the_bytes_redis_py_sends(args: tuple) -> None:
    assert b"".join(PACKER.pack(*args)) == b"".join(_default_packer().pack(*args))


@pytest.mark.parametrize("bad", [True, None, np.int64(3), object()])
def test_the_fast_packer_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(redis.DataError):
        _default_packer().pack("SET", "k", bad)
    with pytest.raises(redis.DataError):
        PACKER.pack("SET", "k", bad)


def test_a_single_redis_client_packs_with_it() -> None:
    client = sync_client(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert client.connection_pool.connection_kwargs["command_packer"] is PACKER
