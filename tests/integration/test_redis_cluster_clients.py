"""The Redis client factory on a real Redis Cluster (a private `stack up --redis-cluster` cluster): the
store's blocking client, the API's asyncio client and the refit's bulk writer reach every master."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from batch.fastredis import BulkStore
from streamrec.localcluster import LocalRedisCluster
from streamrec.redis_clients import async_client
from streamrec.settings import Settings
from streamrec.store import RedisStore, from_bytes
from tests.helpers.redis_cluster import free_cluster_base


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = free_cluster_base()
    stack = Settings(stack_dir=Path(tmp_path_factory.mktemp("stack")), redis_cluster_port=base)
    cluster = LocalRedisCluster(stack)
    binary = shutil.which("redis-server")
    assert binary is not None
    try:
        cluster.up(binary)
        yield base
    finally:
        cluster.down()


KEYS = [f"k-{i}" for i in range(60)]


def test_the_store_uses_a_cluster_client_for_a_cluster_url_or_the_flag(cluster_port: int) -> None:
    for s in (Settings(redis_url=f"redis+cluster://127.0.0.1:{cluster_port}/0", redis_prefix="t-url"),
              Settings(redis_url=f"redis://127.0.0.1:{cluster_port}/0", redis_cluster=True, redis_prefix="t-flag")):
        store = RedisStore(s)
        client = store.client
        assert isinstance(client, RedisCluster)
        for k in KEYS:
            client.set(f"{s.redis_prefix}:{k}", k)
        assert [client.get(f"{s.redis_prefix}:{k}") for k in KEYS] == [k.encode() for k in KEYS]
        masters = {client.get_node_from_key(f"{s.redis_prefix}:{k}").port for k in KEYS}
        assert masters == {cluster_port, cluster_port + 1, cluster_port + 2}
        assert store.delete_prefix() == len(KEYS)  # SCAN and UNLINK over every master
        store.close()


def test_the_api_s_async_client_is_a_cluster_client(cluster_port: int) -> None:
    s = Settings(redis_url=f"redis+cluster://127.0.0.1:{cluster_port}/0")

    async def roundtrip() -> list[bytes | None]:
        client = async_client(s, socket_timeout=None, socket_connect_timeout=1.0, max_connections=8)
        assert isinstance(client, AsyncRedisCluster)
        try:
            for k in KEYS:
                await client.set(f"async:{k}", k)
            got = [await client.get(f"async:{k}") for k in KEYS]
            for k in KEYS:
                await client.delete(f"async:{k}")
            return got
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == [k.encode() for k in KEYS]


def test_vectors_are_written_to_a_cluster_by_the_store_and_the_bulk_writer(cluster_port: int) -> None:
    s = Settings(redis_url=f"redis+cluster://127.0.0.1:{cluster_port}/0", redis_prefix="t-vec")
    ids = [f"u-{i}" for i in range(12_000)]
    block = np.random.default_rng(0).standard_normal((len(ids), 8)).astype(np.float32)
    for store, key in ((RedisStore(s), "t-vec:plain"), (BulkStore(s), "t-vec:bulk")):
        store.write_vectors(key, ids, block)
        assert store.client.hlen(key) == len(ids)
        assert np.array_equal(from_bytes(store.client.hget(key, "u-11999")), block[-1])
        store.client.delete(key)
        store.close()
