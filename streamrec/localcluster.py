"""The local Redis Cluster of ``streamrec stack up --redis-cluster``: 3 masters with 1 replica each.

Six ``redis-server`` processes (the system's, as for the single Redis) in cluster mode bind ``bind_host``
on ``redis_cluster_port`` and the 5 ports after it (each node's cluster bus is its port + 10000), keep
their data (AOF, ``nodes.conf``) under ``<stack_dir>/redis-cluster/<port>/``, and are joined once by
``redis-cli --cluster create ... --cluster-replicas 1``. A later ``up`` restarts the same nodes, which
find each other from their ``nodes.conf``; either way it waits until every node reports
``cluster_state:ok``. The single Redis of the stack is not touched.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from streamrec.settings import Settings
from streamrec.stack_processes import (
    Progress,
    ServiceStatus,
    StackError,
    pid_alive,
    port_bindable,
    port_in_use,
    read_pid,
    say,
    spawn,
    stop_pid,
    tail,
)

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODES = MASTERS * (1 + REPLICAS_PER_MASTER)
SLOTS = 16_384
BUS_OFFSET = 10_000  # Redis's default cluster bus port: the node's port + 10000


@dataclass(frozen=True)
class NodeView:
    """What one node says about the cluster (``CLUSTER INFO`` and ``CLUSTER NODES``)."""

    port: int
    state: str
    slots_assigned: int
    known_nodes: int
    masters: int  # masters that serve slots and are not failing
    keys: int


@dataclass(frozen=True)
class ClusterHealth:
    """The cluster as its nodes see it; ``views`` holds the nodes that answered."""

    views: tuple[NodeView, ...]

    @property
    def ok(self) -> bool:
        """Every node answers, reports ``cluster_state:ok``, knows all nodes and sees every master."""
        return len(self.views) == NODES and all(
            v.state == "ok" and v.known_nodes == NODES and v.masters == MASTERS for v in self.views
        )

    @property
    def fresh(self) -> bool:
        """Every node answers and is a new, empty node that knows only itself (the cluster is to create)."""
        return len(self.views) == NODES and all(
            v.known_nodes == 1 and v.slots_assigned == 0 and v.keys == 0 for v in self.views
        )

    def summary(self) -> str:
        """``6 nodes, 3 masters`` as the first node sees it, with what is wrong when it is not ok."""
        if not self.views:
            return "no node answers"
        first = self.views[0]
        text = f"{first.known_nodes} nodes, {first.masters} masters"
        if not self.ok:
            text += f"; {len(self.views)}/{NODES} nodes answer, cluster_state:{first.state}"
        return text


def _parse_info(text: str) -> dict[str, str]:
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _serving_masters(nodes_text: str) -> int:
    count = 0
    for line in nodes_text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        if "master" in flags and "fail" not in flags and len(fields) > 8:  # fields 8+: its slot ranges
            count += 1
    return count


class LocalRedisCluster:
    """Starts, checks and stops the local Redis Cluster described by ``settings``."""

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.s = settings
        self.progress = progress
        self.root = Path(settings.stack_dir) / "redis-cluster"
        self.ports = [settings.redis_cluster_port + i for i in range(NODES)]

    @property
    def port_range(self) -> str:
        """``17000-17005``: the nodes' client ports."""
        return f"{self.ports[0]}-{self.ports[-1]}"

    def _pidfile(self, port: int) -> Path:
        return self.root / str(port) / "redis.pid"

    def _alive(self, port: int) -> bool:
        return pid_alive(read_pid(self._pidfile(port)))

    def running(self) -> bool:
        """True when any node of the cluster runs."""
        return any(self._alive(p) for p in self.ports)

    # ----------------------------------------------------------------------------- health
    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host=self.s.bind_host, port=port, socket_timeout=1, socket_connect_timeout=1,
                           decode_responses=True)

    def _view(self, port: int) -> NodeView | None:
        client = self._client(port)
        try:
            info = _parse_info(str(client.execute_command("CLUSTER", "INFO")))
            masters = _serving_masters(str(client.execute_command("CLUSTER", "NODES")))
            keys = int(client.dbsize())
        except (redis.RedisError, ValueError):
            return None
        finally:
            client.close()
        return NodeView(port, info.get("cluster_state", "?"), int(info.get("cluster_slots_assigned", 0)),
                        int(info.get("cluster_known_nodes", 0)), masters, keys)

    def health(self) -> ClusterHealth:
        """What every node of ours that runs says about the cluster."""
        views = (self._view(p) for p in self.ports if self._alive(p))
        return ClusterHealth(tuple(v for v in views if v is not None))

    # ----------------------------------------------------------------------------- lifecycle
    def _start_node(self, binary: str, port: int) -> int:
        host, node_dir = self.s.bind_host, self.root / str(port)
        for p in (port, port + BUS_OFFSET):
            if not port_bindable(host, p):
                raise StackError(f"port {p} on {host} is in use by another program: free it or set "
                                 f"STREAMREC_REDIS_CLUSTER_PORT (the cluster takes {self.port_range} and "
                                 f"{self.ports[0] + BUS_OFFSET}-{self.ports[-1] + BUS_OFFSET})")
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary, "--bind", host, "--port", str(port), "--dir", str(node_dir),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no", "--logfile", "",
        ]
        return spawn(cmd, node_dir / "redis.log", self._pidfile(port))

    def _wait(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.s.stack_timeout_s
        while time.monotonic() < deadline:
            dead = [p for p in self.ports if not self._alive(p)]
            if dead:
                log = self.root / str(dead[0]) / "redis.log"
                raise StackError(f"redis-cluster node {dead[0]} exited. Last lines of {log}:\n{tail(log)}")
            if done():
                return
            time.sleep(0.5)
        raise StackError(f"redis-cluster: {what} not within {self.s.stack_timeout_s:.0f}s "
                         f"({self.health().summary()}); logs under {self.root}")

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise StackError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        say(self.progress, f"creating the cluster: {MASTERS} masters, {REPLICAS_PER_MASTER} replica each "
                           "(redis-cli --cluster create)")
        cmd = [cli, "--cluster", "create", *(f"{self.s.bind_host}:{p}" for p in self.ports),
               "--cluster-replicas", str(REPLICAS_PER_MASTER), "--cluster-yes"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=self.s.stack_timeout_s, check=False)
        if result.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed:\n{(result.stdout + result.stderr)[-3000:]}")

    def up(self, binary: str) -> None:
        """Start the nodes that do not run, create the cluster when it is new, wait for ``cluster_state:ok``."""
        if all(self._alive(p) for p in self.ports) and self.health().ok:
            say(self.progress, f"redis-cluster already running on {self.s.bind_host}:{self.port_range}")
            return
        started = [p for p in self.ports if not self._alive(p)]
        for n, port in enumerate(started, 1):
            say(self.progress, f"starting redis-cluster node {n}/{len(started)} on {self.s.bind_host}:{port}")
            self._start_node(binary, port)
        self._wait("every node answering", lambda: len(self.health().views) == NODES)
        health = self.health()
        if health.fresh:
            self._create()
        elif not all(v.slots_assigned == SLOTS for v in health.views):
            raise StackError(
                f"the Redis Cluster under {self.root} is neither new nor complete ({health.summary()}): "
                f"stop it (streamrec stack down) and remove {self.root} to create a new one")
        say(self.progress, "waiting for cluster_state:ok on every node ...")
        self._wait("cluster_state:ok", lambda: self.health().ok)
        say(self.progress, f"redis-cluster is ready: {self.health().summary()} on "
                           f"{self.s.bind_host}:{self.port_range} (data: {self.root})")

    def down(self) -> int:
        """Stop every node (SIGTERM, then SIGKILL after a timeout); returns how many ran."""
        stopped = 0
        for port in self.ports:
            pidfile = self._pidfile(port)
            if stop_pid("redis-cluster", read_pid(pidfile), pidfile, self.s.bind_host, port):
                stopped += 1
        return stopped

    def status(self) -> ServiceStatus:
        """``redis-cluster`` healthy (``6 nodes, 3 masters``) or not, with the first node's pid."""
        pids = [read_pid(self._pidfile(p)) for p in self.ports]
        alive = [pid for pid in pids if pid_alive(pid)]
        where = f"{self.s.bind_host}:{self.port_range}"
        if not alive:
            busy = [p for p in self.ports if port_in_use(self.s.bind_host, p)]
            detail = f"stopped; port {busy[0]} is used by another program" if busy else "stopped"
            return ServiceStatus("redis-cluster", None, self.ports[0], False, detail)
        health = self.health()
        detail = (f"healthy on {where}: {health.summary()}" if health.ok
                  else f"running but not healthy on {where}: {len(alive)}/{NODES} nodes run, {health.summary()}")
        return ServiceStatus("redis-cluster", alive[0], self.ports[0], health.ok, detail)
