"""Redis Cluster faults, on a private cluster (3 masters with 1 replica each, its own ports and data
directory: killing a node never touches the shared cluster) and the session's Kafka.

What users rely on when streamrec runs on a Redis Cluster:

1. Worker crash: the worker SIGKILLed under load and started again applies every event Kafka acknowledged
   exactly once (per user: 0 lost, 0 doubled), the API answering reads (200) throughout.
2. Master failover: one master's ``redis-server`` SIGKILLed while the worker applies a stream of events and
   the API is queried. Its replica takes over; the worker and the API recover by themselves (neither is
   restarted); the API answers 503 (never 500) while the slot is unavailable and 200 again afterwards; every
   acknowledged event is applied exactly once.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_redis_cluster_failover.py -v``
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from models.foldin import gram
from online_api.server import ApiProcess
from streamrec.kafka_io import end_offsets
from streamrec.localcluster import LocalRedisCluster
from streamrec.settings import Settings
from streamrec.stack_processes import pid_alive, read_pid
from streamrec.store import RedisStore
from streamrec.store.models import activate, write_version
from tests.helpers.processes import Worker, applied_offsets, wait_until
from tests.helpers.redis_cluster import free_cluster_base
from tests.reliability.common import exactly_once, strip_ids, user_counts, write_spec
from tests.reliability.load import Loader
from tests.reliability.procs import end_scenario, metric_sum
from tests.reliability.record import record

COMMAND = "pytest -m reliability tests/reliability/test_redis_cluster_failover.py"
ITEMS = 1_500
USERS = 3_000
FACTORS = 16
READ_RPS = 100
# scenario 1: worker crash
CRASH_RATE = 2_000
CRASH_DURATION_S = 35.0
KILLS = 2
# scenario 2: master failover
RATE = 1_000
DURATION_S = 45.0
KILL_AFTER_APPLIED = 8_000  # events the worker applied before the master is killed (mid-stream)
PROBE_USERS = 24
STEADY_200 = 40  # consecutive 200s from the probe that count as "the API answers again"


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of this module's own (free ports, data under a tmp dir), stopped at the end."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    stack = Settings(stack_dir=tmp_path_factory.mktemp("redis-cluster-stack"), redis_cluster_port=free_cluster_base())
    local = LocalRedisCluster(stack, progress=lambda m: print(f"[private cluster] {m}", flush=True))
    try:
        local.up(binary)
        yield local
    finally:
        local.down()


@pytest.fixture
def on_cluster(make_settings: Callable[..., Settings], cluster: LocalRedisCluster) -> Callable[..., Settings]:
    """Isolated settings (shared Kafka, own topics, group and prefix) on the private cluster."""

    def factory(**overrides: object) -> Settings:
        url = f"redis+cluster://{cluster.s.bind_host}:{cluster.ports[0]}/0"
        return make_settings(redis_url=url, **overrides)

    return factory


# ------------------------------------------------------------------------------------------- helpers
def publish_model(s: Settings, seed: int = 3) -> None:
    """A current model version of ``ITEMS`` items with random factors (the worker folds users against it)."""
    y = (np.random.default_rng(seed).standard_normal((ITEMS, s.als_factors)) * 0.1).astype(np.float32)
    store = RedisStore(s)
    try:
        write_version(store, "vcluster", {"source": "test_redis_cluster_failover (random factors)"},
                      [f"i{i}" for i in range(ITEMS)], y, gram(y), [], np.zeros((0, s.als_factors), np.float32))
        activate(store, "vcluster")
    finally:
        store.close()


def read_spec(path: Path) -> Path:
    return write_spec(path, [
        {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 8, "kind": "recommendations"},
        {"method": "GET", "path": "/v1/trending?window=1h", "weight": 1, "kind": "trending"},
        {"method": "GET", "path": "/v1/items/{item}/similar?k=10", "weight": 1, "kind": "similar"}],
        users=[f"u{i}" for i in range(USERS)], items=[f"i{i}" for i in range(ITEMS)])


def progress(s: Settings, store: RedisStore) -> int | None:
    """Sum of the applied offsets in Redis (None while Redis cannot answer)."""
    try:
        return sum(applied_offsets(s, store).values())
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
        return None


def reached(s: Settings, store: RedisStore, target: dict[str, int]) -> bool:
    """True when every ``topic:partition`` of ``target`` is applied up to its offset."""
    try:
        applied = applied_offsets(s, store)
    except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
        return False
    return all(applied.get(f, -1) >= off for f, off in target.items())


def end_targets(s: Settings) -> dict[str, int]:
    """``topic:partition`` -> the last offset in Kafka now (what "applied everything so far" means)."""
    return {f"{t}:{p}": hi - 1 for (t, p), hi in end_offsets(s, s.event_topics).items() if hi > 0}


# ------------------------------------------------------------------------------------------- cluster views
@dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: tuple[tuple[int, int], ...]

    def serves(self, slot: int) -> bool:
        return "master" in self.flags and "fail" not in self.flags and any(a <= slot <= b for a, b in self.slots)


def _client(cluster: LocalRedisCluster, port: int) -> redis.Redis:
    return redis.Redis(host=cluster.s.bind_host, port=port, socket_timeout=2, socket_connect_timeout=1,
                       decode_responses=True)


def cluster_nodes(cluster: LocalRedisCluster, port: int) -> list[Node]:
    """The cluster as the node on ``port`` sees it."""
    with _client(cluster, port) as c:
        text = str(c.execute_command("CLUSTER", "NODES"))
    nodes = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        ranges = [r for r in f[8:] if not r.startswith("[")]  # "[slot->-id]": a slot being migrated
        slots = tuple((int(r.split("-")[0]), int(r.split("-")[-1])) for r in ranges)
        nodes.append(Node(f[0], int(f[1].split("@")[0].rsplit(":", 1)[1]), frozenset(f[2].split(",")), f[3], slots))
    return nodes


def keyslot(cluster: LocalRedisCluster, key: str) -> int:
    with _client(cluster, cluster.ports[0]) as c:
        return int(c.execute_command("CLUSTER", "KEYSLOT", key))


def failed_over(cluster: LocalRedisCluster, survivor: int, slot: int, replica: int) -> bool:
    """True when ``survivor`` reports ``cluster_state:ok`` and ``slot`` served by the promoted ``replica``."""
    try:
        with _client(cluster, survivor) as c:
            state = str(c.execute_command("CLUSTER", "INFO"))
        nodes = cluster_nodes(cluster, survivor)
    except redis.RedisError:
        return False
    return "cluster_state:ok" in state and any(n.port == replica and n.serves(slot) for n in nodes)


def master_pid(cluster: LocalRedisCluster, port: int) -> int:
    """The pid of the ``redis-server`` answering on ``port`` (``INFO server``), checked to be our node."""
    with _client(cluster, port) as c:
        pid = int(c.info("server")["process_id"])
    pidfile = cluster.root / str(port) / "redis.pid"  # written by LocalRedisCluster when it started the node
    assert read_pid(pidfile) == pid, f"pid {pid} on port {port} is not the private node of {pidfile}"
    return pid


# ------------------------------------------------------------------------------------------- the API probe
@dataclass
class Probe:
    """A thread asking the API for recommendations of ``users`` (those of the killed slot) back to back,
    recording (monotonic time, status) or the transport error of every request."""

    url: str
    users: list[str]
    answers: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-probe", daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            n = 0
            while not self._stop.is_set():
                user = self.users[n % len(self.users)]
                n += 1
                try:
                    code = str(http.get(f"/v1/users/{user}/recommendations?k=10").status_code)
                except httpx.HTTPError as exc:
                    code = f"error:{type(exc).__name__}"
                self.answers.append((time.monotonic(), code))
                self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def steady(self, since: float) -> bool:
        """True when the last ``STEADY_200`` answers after ``since`` are all 200."""
        tail = [c for t, c in self.answers[-STEADY_200:] if t > since]
        return len(tail) == STEADY_200 and set(tail) == {"200"}

    def figures(self, since: float) -> dict[str, Any]:
        """Status counts after ``since`` and, when it answered anything but 200, how long that lasted."""
        after = [(t, c) for t, c in list(self.answers) if t >= since]
        bad = [t for t, c in after if c != "200"]
        again = next((t for t, c in after if c == "200" and bad and t > bad[-1]), None)
        return {"status": dict(Counter(c for _, c in after)), "requests": len(after),
                "first_non_200_after_kill_s": round(bad[0] - since, 2) if bad else None,
                "api_200_again_after_kill_s": None if bad and again is None else round((again or since) - since, 2)}


# ------------------------------------------------------------------------------------------- scenario 1
def test_sigkill_the_worker_on_a_redis_cluster_applies_every_event_exactly_once(
        on_cluster: Callable[..., Settings], tmp_path: Path) -> None:
    s = on_cluster(als_factors=FACTORS, history_cap=50, worker_batch_size=2_000, worker_batch_within_s=0.2,
                   worker_session_timeout_s=6.0)
    publish_model(s)
    store = RedisStore(s)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    workers: list[Worker] = [Worker(s, tmp_path, "worker-0")]
    loaders: list[Loader] = []
    try:
        api.start()
        api.wait_for("/readyz")
        events = Loader("events", s, tmp_path, "events", "--rate", str(CRASH_RATE), "--duration",
                        str(CRASH_DURATION_S), "--users", str(USERS), "--items", str(ITEMS))
        reads = Loader("http", s, tmp_path, "reads", "--url", api.url, "--spec", str(read_spec(tmp_path / "r.json")),
                       "--rate", str(READ_RPS / 2), "--duration", str(CRASH_DURATION_S + 5), "--connections", "4")
        loaders += [events, reads]
        kills = crash_workers(s, store, workers, tmp_path)
        produced = events.wait(CRASH_DURATION_S + 120)
        read_result = reads.wait(CRASH_DURATION_S + 120)
        drain_s = workers[-1].wait_applied(store, 180)
        counts = exactly_once(produced["per_user"], user_counts(store))
        record("redis_cluster_worker_crash", {
            "command": COMMAND, "events_sent": produced["sent"], "events_delivered": produced["delivered"], **counts,
            "kills": kills, "worker_processes": len(workers), "drain_after_load_s": round(drain_s, 1),
            "applied_by_worker_stats": sum(w.applied() for w in workers), "reads": strip_ids(read_result),
            "load": {"rate": CRASH_RATE, "duration_s": CRASH_DURATION_S, "users": USERS, "items": ITEMS,
                     "partitions": s.partitions}})
        assert produced["undelivered"] == 0 and not produced["failed"], strip_ids(produced)
        assert counts["lost"] == 0 and counts["doubled"] == 0, counts
        assert counts["applied"] == produced["delivered"], counts
        assert not read_result["errors"] and set(read_result["status"]) == {"200"}, strip_ids(read_result)
        workers[-1].assert_alive()
    finally:
        end_scenario(api, store, loaders, workers)


def crash_workers(s: Settings, store: RedisStore, workers: list[Worker], directory: Path) -> list[dict[str, float]]:
    """SIGKILL the newest worker ``KILLS`` times mid-stream, starting a new one each time; returns when each
    kill happened and how long the new worker took to apply events again."""
    rng = random.Random(17)
    started = time.monotonic()
    kills = []
    for n in range(KILLS):
        before = progress(s, store) or 0
        workers[-1].wait_until(lambda b=before: (progress(s, store) or 0) > b, 90,  # type: ignore[misc]
                               f"worker-{n} applying events")
        mid = (progress(s, store) or 0) + rng.randint(3_000, 9_000)  # mid-stream: batches are being applied
        workers[-1].wait_until(lambda m=mid: (progress(s, store) or 0) >= m, 90,  # type: ignore[misc]
                               f"worker-{n} mid-stream")
        workers[-1].kill()
        killed_at = time.monotonic()
        at = progress(s, store) or 0
        workers.append(Worker(s, directory, f"worker-{n + 1}"))
        resumed = workers[-1].wait_until(lambda a=at: (progress(s, store) or 0) > a, 120,  # type: ignore[misc]
                                         f"worker-{n + 1} resuming")
        kills.append({"killed_after_s": round(killed_at - started, 1), "resumed_after_s": round(resumed, 1)})
    return kills


# ------------------------------------------------------------------------------------------- scenario 2
@dataclass
class Victim:
    """The master to kill: the one serving the most partitions' slots, and the replica that will take over."""

    port: int
    replica: int
    survivor: int
    slot: int
    partitions: list[int]


def online_replica(cluster: LocalRedisCluster, port: int) -> int | None:
    """The port of a replica the master on ``port`` streams to (``INFO replication``: ``state=online``)."""
    try:
        with _client(cluster, port) as c:
            info = c.info("replication")
    except redis.RedisError:
        return None
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return next((int(r["port"]) for r in replicas if r.get("state") == "online"), None)


def choose_victim(cluster: LocalRedisCluster, store: RedisStore) -> Victim:
    nodes = cluster_nodes(cluster, cluster.ports[0])
    slots = {p: keyslot(cluster, store.keys.tag(p)) for p in range(store.keys.partitions)}
    masters = [n for n in nodes if "master" in n.flags and n.slots]
    served = {m.port: [p for p, sl in slots.items() if m.serves(sl)] for m in masters}
    victim = max(masters, key=lambda m: (len(served[m.port]), -m.port))
    wait_until(lambda: online_replica(cluster, victim.port) is not None, 60, f"a replica of master {victim.port}")
    replica = online_replica(cluster, victim.port)
    assert replica is not None
    survivor = next(m.port for m in masters if m.port != victim.port)
    parts = served[victim.port]
    assert parts, f"no partition's slot on any master: {served}"
    return Victim(victim.port, replica, survivor, slots[parts[0]], parts)


def test_kill_a_redis_cluster_master_under_load_its_replica_takes_over(
        on_cluster: Callable[..., Settings], cluster: LocalRedisCluster, tmp_path: Path) -> None:
    s = on_cluster(als_factors=FACTORS, history_cap=50, worker_batch_within_s=0.1)
    publish_model(s)
    store = RedisStore(s)
    victim = choose_victim(cluster, store)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    workers: list[Worker] = [Worker(s, tmp_path, "worker")]
    probe_users = [u for u in (f"u{i}" for i in range(USERS)) if store.keys.partition(u) in victim.partitions]
    loaders: list[Loader] = []
    probe: Probe | None = None
    try:
        api.start()
        api.wait_for("/readyz")
        probe = Probe(api.url, probe_users[:PROBE_USERS]).start()
        events = Loader("events", s, tmp_path, "events", "--rate", str(RATE), "--duration", str(DURATION_S),
                        "--users", str(USERS), "--items", str(ITEMS), "--seed", "23")
        reads = Loader("http", s, tmp_path, "reads", "--url", api.url, "--spec", str(read_spec(tmp_path / "r.json")),
                       "--rate", str(READ_RPS), "--duration", str(DURATION_S + 5), "--connections", "4")
        loaders += [events, reads]
        figures = fail_over(s, store, cluster, victim, workers[0], probe)
        produced = events.wait(DURATION_S + 120)
        read_result = reads.wait(DURATION_S + 120)
        drain_s = workers[0].wait_applied(store, 240)
        probe.stop()
        counts = exactly_once(produced["per_user"], user_counts(store))
        check_failover(s, store, api, workers[0], probe, figures, produced, read_result, counts, drain_s)
    finally:
        if probe is not None:
            probe.stop()
        end_scenario(api, store, loaders, workers)
        restart_nodes(cluster)


def fail_over(s: Settings, store: RedisStore, cluster: LocalRedisCluster, victim: Victim, worker: Worker,
              probe: Probe) -> dict[str, Any]:
    """Once the worker is mid-stream, SIGKILL the victim master; then poll (one deadline) until its replica
    serves the slot, the API answers 200 again, the worker applies the failed partitions' events again and
    has applied every event in Kafka at the moment the replica took over. Returns when each happened."""
    worker.wait_until(lambda: (progress(s, store) or 0) >= KILL_AFTER_APPLIED, 120, "the worker applying events")
    worker.wait_until(lambda: probe.steady(0.0), 60, "the API answering 200 before the kill")
    pid = master_pid(cluster, victim.port)
    at_kill = {f: off + 1 for f, off in applied_offsets(s, store).items()
               if int(f.rsplit(":", 1)[1]) in victim.partitions}
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not pid_alive(pid), 10, f"redis-server {pid} gone")
    marks: dict[str, float] = {}
    target: dict[str, int] = {}

    def milestones() -> bool:
        now = time.monotonic() - killed
        if "failover_s" not in marks and failed_over(cluster, victim.survivor, victim.slot, victim.replica):
            marks["failover_s"] = now
            target.update(end_targets(s))  # every event in Kafka once the replica took over
        if "worker_resumed_after_kill_s" not in marks and reached(s, store, at_kill):
            marks["worker_resumed_after_kill_s"] = now
        if target and "worker_caught_up_after_kill_s" not in marks and reached(s, store, target):
            marks["worker_caught_up_after_kill_s"] = now
        if "api_steady_after_kill_s" not in marks and probe.steady(killed):
            marks["api_steady_after_kill_s"] = now
        return len(marks) == 4

    worker.wait_until(milestones, 180, lambda: f"the failover's milestones (reached: {marks})")
    return {"killed": killed, "redis_master_port": victim.port, "redis_master_pid": pid,
            "promoted_replica_port": victim.replica, "partitions_on_master": victim.partitions,
            **{k: round(v, 2) for k, v in marks.items()}}


def check_failover(s: Settings, store: RedisStore, api: ApiProcess, worker: Worker, probe: Probe,
                   figures: dict[str, Any], produced: dict[str, Any], reads: dict[str, Any],
                   counts: dict[str, int], drain_s: float) -> None:
    """Record the failover's figures, then assert what users rely on."""
    killed = figures.pop("killed")
    seen = probe.figures(killed)
    statuses = Counter(seen["status"]) + Counter(reads["status"])
    api_log = api.log_path.read_text(errors="replace") if api.log_path else ""
    record("redis_cluster_failover", {
        "command": COMMAND, "events_sent": produced["sent"], "events_delivered": produced["delivered"], **counts,
        **figures, "api_200_again_after_kill_s": seen["api_200_again_after_kill_s"],
        "api_first_non_200_after_kill_s": seen["first_non_200_after_kill_s"], "probe": seen,
        "reads": strip_ids(reads), "api_503": statuses.get("503", 0), "api_500": statuses.get("500", 0),
        "api_unexpected_errors_logged": api_log.count("unexpected error"),
        "worker_drain_after_load_s": round(drain_s, 1), "worker_restarted": False, "api_restarted": False,
        "worker_infrastructure_retries": metric_sum(worker.metrics(), "streamrec_worker_retries_total",
                                                    'kind="infrastructure"'),
        "load": {"rate": RATE, "duration_s": DURATION_S, "reads_rps": READ_RPS, "users": USERS, "items": ITEMS,
                 "partitions": s.partitions, "probe_users": PROBE_USERS}})
    assert produced["undelivered"] == 0 and not produced["failed"], strip_ids(produced)
    assert counts["lost"] == 0 and counts["doubled"] == 0, counts
    assert counts["applied"] == produced["delivered"], counts
    assert set(seen["status"]) <= {"200", "503"}, seen  # never a 500, a hang or a dropped connection
    assert seen["status"].get("503", 0) > 0, f"the API never missed the failed slot: {seen}"
    assert not reads["errors"] and set(reads["status"]) <= {"200", "503"}, strip_ids(reads)
    assert probe.steady(killed), probe.answers[-STEADY_200:]
    worker.assert_alive()
    assert api.proc is not None and api.proc.poll() is None, "the API process exited"


def restart_nodes(cluster: LocalRedisCluster) -> None:
    """Start the killed node again (it rejoins as a replica), so the module's cluster is whole."""
    binary = shutil.which("redis-server")
    assert binary is not None
    cluster.up(binary)
