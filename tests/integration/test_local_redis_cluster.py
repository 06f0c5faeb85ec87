"""The local Redis Cluster (`stack up --redis-cluster`) on its own ports and data folder: created, healthy
with 6 nodes and 3 masters, serves keys of every slot range, idempotent, restarts with its data, stops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from streamrec.localcluster import NODES, LocalRedisCluster
from streamrec.settings import Settings
from streamrec.stack_processes import port_in_use
from tests.helpers.redis_cluster import free_cluster_base


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def cluster_env(tmp_path: Path) -> dict[str, str]:
    base = free_cluster_base()
    unused = str(base + NODES)  # Kafka and the single Redis are not started here: status finds them stopped
    return {**os.environ, "STREAMREC_STACK_DIR": str(tmp_path / "stack"), "STREAMREC_REDIS_CLUSTER_PORT": str(base),
            "STREAMREC_KAFKA_PORT": unused, "STREAMREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{unused}",
            "STREAMREC_REDIS_PORT": unused}


def test_cluster_lifecycle(cluster_env: dict[str, str]) -> None:
    base = int(cluster_env["STREAMREC_REDIS_CLUSTER_PORT"])
    said: list[str] = []
    cluster = LocalRedisCluster(Settings(stack_dir=Path(cluster_env["STREAMREC_STACK_DIR"]),
                                         redis_cluster_port=base), progress=said.append)
    binary = shutil.which("redis-server")
    assert binary is not None
    try:
        cluster.up(binary)
        assert any("creating the cluster" in m for m in said) and "cluster is ready" in said[-1]

        status = _cli(cluster_env, "stack", "status")
        line = next(ln for ln in status.stdout.splitlines() if ln.startswith("redis-cluster"))
        assert "redis-cluster healthy" in line and "6 nodes, 3 masters" in line, status.stdout

        client = RedisCluster(host="127.0.0.1", port=base, decode_responses=True)
        keys = [f"key-{i}" for i in range(60)]
        for k in keys:
            client.set(k, f"value of {k}")
        assert {client.get_node_from_key(k).port for k in keys} == {base, base + 1, base + 2}
        assert len({client.keyslot(k) for k in keys}) == len(keys)
        assert [client.get(k) for k in keys] == [f"value of {k}" for k in keys]
        client.close()

        said.clear()
        cluster.up(binary)  # a second up while it runs changes nothing
        assert said == [f"redis-cluster already running on 127.0.0.1:{base}-{base + 5}"]

        assert cluster.down() == NODES
        said.clear()
        cluster.up(binary)  # restarted: the nodes find each other again, nothing is created, the data is back
        assert not any("creating" in m for m in said) and "cluster is ready" in said[-1]
        client = RedisCluster(host="127.0.0.1", port=base, decode_responses=True)
        assert [client.get(k) for k in keys] == [f"value of {k}" for k in keys]
        client.close()
    finally:
        down = _cli(cluster_env, "stack", "down")
    assert down.returncode == 0 and "redis-cluster stopped (6 nodes)" in down.stderr
    assert not any(port_in_use("127.0.0.1", p) for p in range(base, base + NODES))
    assert "redis-cluster" not in _cli(cluster_env, "stack", "status").stdout
    assert "redis-cluster DOWN" in _cli(cluster_env, "stack", "status", "--redis-cluster").stdout
