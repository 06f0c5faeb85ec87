"""The local stack: real Apache Kafka (KRaft, single node) and Redis without Docker.

Kafka's jars come from Maven Central through ``stack/pom.xml`` into ``<stack_dir>/kafka-libs`` and run on
the machine's Java 17; Redis is the system's ``redis-server`` (installed from Debian packages when missing
and running as root). Both bind ``bind_host`` (loopback by default), keep their data under ``stack_dir``,
start idempotently, wait until ready, and stop cleanly.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from streamrec.localcluster import LocalRedisCluster
from streamrec.settings import REPO_ROOT, Settings
from streamrec.stack_processes import (
    Progress,
    ServiceStatus,
    StackError,
    pid_alive,
    port_in_use,
    read_pid,
    say,
    spawn,
    stop_pid,
    tail,
)

__all__ = ["LocalStack", "Progress", "ServiceStatus", "StackError", "main_progress", "port_in_use"]

def kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as ``kafka-storage random-uuid`` prints. Never one
    starting with ``-``, which the storage tool's argument parser takes for an option (Kafka's own
    ``Uuid.randomUuid`` draws again in that case too): one format in 64 failed so."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalStack:
    """Starts, checks and stops the local Kafka and Redis servers described by ``settings``."""

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.s = settings
        self.progress = progress
        self.root = Path(settings.stack_dir)
        self.kafka_dir = self.root / "kafka"
        self.redis_dir = self.root / "redis"
        self.libs = Path(settings.kafka_libs_dir) if settings.kafka_libs_dir else self.root / "kafka-libs"
        self.cluster = LocalRedisCluster(settings, progress)

    # ----------------------------------------------------------------------------- installation
    def ensure_kafka_jars(self) -> None:
        """Copy the Kafka broker jars from Maven Central into the git-ignored cache (once)."""
        if any(self.libs.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("java") is None or shutil.which("mvn") is None:
            raise StackError(
                "Java 17 and Maven are needed to run Kafka without Docker: "
                "apt-get install openjdk-17-jre-headless maven (or use docker compose up)"
            )
        say(self.progress, "fetching Apache Kafka jars from Maven Central (first run only) ...")
        cmd = [
            "mvn", "-q", "-B", "-f", str(REPO_ROOT / "stack" / "pom.xml"),
            "dependency:copy-dependencies", f"-DoutputDirectory={self.libs}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(self.libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"Maven could not fetch the Kafka jars:\n{(result.stdout + result.stderr)[-3000:]}")

    def ensure_redis_binary(self) -> str:
        """Path of ``redis-server``; installs Debian's package when missing and running as root."""
        found = shutil.which("redis-server")
        if found:
            return found
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say(self.progress, "installing redis-server from Debian packages ...")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
                subprocess.run(cmd, check=False, env=env, capture_output=True)
            found = shutil.which("redis-server")
            if found:
                return found
        raise StackError("redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server)")

    # ----------------------------------------------------------------------------- Kafka
    def _kafka_properties(self) -> Path:
        host, port, cport = self.s.bind_host, self.s.kafka_port, self.s.kafka_controller_port
        props = f"""# Written by streamrec's local stack; single-node KRaft broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{cport}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={self.kafka_dir / "data"}
num.partitions={self.s.partitions}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# The event topics are the source of truth for the batch refit: keep them (see docs/operations.md).
log.retention.hours=-1
auto.create.topics.enable=false
"""
        path = self.kafka_dir / "server.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(props)
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.s.kafka_heap}", f"-Xms{self.s.kafka_heap}", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={REPO_ROOT / 'stack' / 'log4j2.yaml'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]

    def start_kafka(self) -> None:
        """Start the broker unless it already runs; wait until it answers metadata requests."""
        pidfile = self.kafka_dir / "kafka.pid"
        pid = read_pid(pidfile)
        host, port = self.s.bind_host, self.s.kafka_port
        if pid_alive(pid) and port_in_use(host, port):
            say(self.progress, f"kafka already running (pid {pid}) on {host}:{port}")
            return
        for p in (port, self.s.kafka_controller_port):
            if port_in_use(host, p):
                raise StackError(
                    f"port {p} on {host} is in use by another program: free it or set "
                    f"STREAMREC_KAFKA_PORT / STREAMREC_KAFKA_CONTROLLER_PORT"
                )
        self.ensure_kafka_jars()
        props = self._kafka_properties()
        if not (self.kafka_dir / "data" / "meta.properties").exists():
            cluster_id = kafka_cluster_id()
            fmt = self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone")
            result = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")
        log = self.kafka_dir / "kafka.log"
        say(self.progress, f"starting kafka on {host}:{port} (log: {log})")
        pid = spawn(self._java("kafka.Kafka", str(props)), log, pidfile)
        self._wait("kafka", pid, log, self._kafka_ready)

    def _kafka_ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if not port_in_use(self.s.bind_host, self.s.kafka_port):
            return False
        admin = AdminClient({"bootstrap.servers": self.s.kafka_bootstrap, "log_level": 0})
        try:
            md = admin.list_topics(timeout=3)
        except Exception:
            return False
        return len(md.brokers) > 0

    # ----------------------------------------------------------------------------- Redis
    def start_redis(self) -> None:
        """Start redis-server (AOF on) unless it already runs; wait until it answers PING."""
        pidfile = self.redis_dir / "redis.pid"
        pid = read_pid(pidfile)
        host, port = self.s.bind_host, self.s.redis_port
        if pid_alive(pid) and port_in_use(host, port):
            say(self.progress, f"redis already running (pid {pid}) on {host}:{port}")
            return
        if port_in_use(host, port):
            raise StackError(f"port {port} on {host} is in use by another program: free it or set STREAMREC_REDIS_PORT")
        binary = self.ensure_redis_binary()
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        log = self.redis_dir / "redis.log"
        cmd = [
            binary, "--bind", host, "--port", str(port), "--dir", str(self.redis_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no", "--logfile", "",
        ]
        say(self.progress, f"starting redis on {host}:{port} (log: {log})")
        pid = spawn(cmd, log, pidfile)
        self._wait("redis", pid, log, self._redis_ready)

    def _redis_ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=self.s.bind_host, port=self.s.redis_port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    # ----------------------------------------------------------------------------- common
    def _wait(self, name: str, pid: int, log: Path, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.s.stack_timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise StackError(f"{name} exited during start-up. Last lines of {log}:\n{tail(log)}")
            if ready():
                say(self.progress, f"{name} is ready")
                return
            time.sleep(0.5)
        raise StackError(
            f"{name} was not ready within {self.s.stack_timeout_s:.0f}s. Last lines of {log}:\n{tail(log)}"
        )

    def up(self, redis_cluster: bool = False) -> None:
        """Start Redis and Kafka (idempotent) and create the topics; with ``redis_cluster`` also the local
        Redis Cluster (:mod:`streamrec.localcluster`)."""
        self.start_redis()
        if redis_cluster:
            self.cluster.up(self.ensure_redis_binary())
        self.start_kafka()
        from streamrec.kafka_io import ensure_topics

        created = ensure_topics(self.s)
        if created:
            say(self.progress, f"created topics {', '.join(created)} ({self.s.partitions} partitions)")

    def down(self) -> None:
        """Stop both servers and the Redis Cluster when it runs (SIGTERM, then SIGKILL after a timeout) and
        free their ports."""
        if self.cluster.running():
            say(self.progress, f"redis-cluster stopped ({self.cluster.down()} nodes)")
        servers = (("kafka", self.kafka_dir, self.s.kafka_port), ("redis", self.redis_dir, self.s.redis_port))
        for name, d, port in servers:
            pidfile = d / f"{name}.pid"
            if stop_pid(name, read_pid(pidfile), pidfile, self.s.bind_host, port):
                say(self.progress, f"{name} stopped")
            else:
                say(self.progress, f"{name} was not running")

    def status(self, redis_cluster: bool = False) -> list[ServiceStatus]:
        """Health of each server: its pid is alive and it answers its protocol. The Redis Cluster is listed
        when it runs, or always with ``redis_cluster``."""
        out = []
        for name, d, port, ready in (
            ("kafka", self.kafka_dir, self.s.kafka_port, self._kafka_ready),
            ("redis", self.redis_dir, self.s.redis_port, self._redis_ready),
        ):
            pid = read_pid(d / f"{name}.pid")
            alive = pid_alive(pid)
            healthy = alive and ready()
            if healthy:
                detail = f"healthy on {self.s.bind_host}:{port}"
            elif alive:
                detail = "running but not answering"
            elif port_in_use(self.s.bind_host, port):
                detail = f"stopped; port {port} is used by another program"
            else:
                detail = "stopped"
            out.append(ServiceStatus(name, pid if alive else None, port, healthy, detail))
        if redis_cluster or self.cluster.running():
            out.append(self.cluster.status())
        return out


def main_progress(msg: str) -> None:
    """Progress printer for the CLI."""
    print(f"[stack] {msg}", file=sys.stderr, flush=True)
