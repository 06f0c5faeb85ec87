"""What the reliability scenarios measure and break: process memory and sockets, a private local stack.

Starting and stopping workers and other streamrec processes is :mod:`tests.helpers.processes` (shared with
the integration tests); the scenarios stop what they start in their own ``finally``. Memory and sockets
are read from /proc (Linux), so nothing beyond the standard library is needed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online_api.server import free_port
from streamrec.localstack import LocalStack
from streamrec.settings import Settings
from streamrec.stack_processes import read_pid, stop_pid

if TYPE_CHECKING:
    from online_api.server import ApiProcess
    from streamrec.store import RedisStore
    from tests.helpers.processes import ChildProcess
    from tests.reliability.load import Loader


def metric_sum(text: str, name: str, label_filter: str = "") -> float:
    """Sum of a Prometheus series' samples whose labels contain ``label_filter``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if label_filter in (m[1] or ""):
            total += float(m[2])
    return total


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass
class RssSampler:
    """Samples the RSS of named processes every ``every_s`` seconds in a daemon thread."""

    pids: dict[str, int]
    every_s: float = 10.0
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        now = time.monotonic() - self._t0
        for name, pid in self.pids.items():
            rss = rss_mb(pid)
            if rss is not None:
                self.samples.setdefault(name, []).append((round(now, 1), round(rss, 1)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def start_end(self) -> dict[str, dict[str, float]]:
        return {name: {"start_mb": s[0][1], "end_mb": s[-1][1], "max_mb": max(v for _, v in s)}
                for name, s in self.samples.items() if s}


# ---------------------------------------------------------------------------------------- sockets
def _tcp_listeners() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket (IPv4 and IPv6)."""
    out: dict[int, tuple[str, int]] = {}
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A":  # LISTEN
                continue
            addr_hex, port_hex = cols[1].split(":")
            raw = bytes.fromhex(addr_hex)
            if v6:
                # /proc stores four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, words)
            else:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            out[int(cols[9])] = (addr, int(port_hex, 16))
    return out


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` (or any of its threads) listens on."""
    listeners = _tcp_listeners()
    found = []
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in listeners:
                    found.append(listeners[inode])
    except OSError:
        pass
    return sorted(set(found))


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")


# ---------------------------------------------------------------------------------------- private stack
class PrivateStack:
    """A LocalStack of its own (data under ``directory``, free ports) for scenarios that stop or wipe
    Kafka and Redis: the shared stack other tests use is never touched."""

    def __init__(self, directory: Path) -> None:
        kport, cport, rport = free_port(), free_port(), free_port()
        shared = Settings()  # the Kafka jars the shared stack fetched (make reliability runs `stack up` first)
        libs = shared.kafka_libs_dir or Path(shared.stack_dir) / "kafka-libs"
        self.settings = Settings(
            stack_dir=directory, kafka_libs_dir=libs, kafka_port=kport,
            kafka_controller_port=cport, redis_port=rport, kafka_bootstrap=f"127.0.0.1:{kport}",
            redis_url=f"redis://127.0.0.1:{rport}/0", kafka_heap="512m", stack_timeout_s=120.0)
        self.stack = LocalStack(self.settings, progress=lambda m: print(f"[private stack] {m}", flush=True))

    def up(self) -> PrivateStack:
        self.stack.up()
        return self

    def down(self) -> None:
        self.stack.down()

    def _pid(self, name: str) -> int | None:
        d = self.stack.kafka_dir if name == "kafka" else self.stack.redis_dir
        return read_pid(d / f"{name}.pid")

    def pid(self, name: str) -> int:
        pid = self._pid(name)
        assert pid is not None, f"{name} of the private stack is not running"
        return pid

    def stop(self, name: str, sig: int = signal.SIGTERM) -> float:
        """Stop one server (``sig`` first; SIGKILL after 30 s); returns the seconds it took."""
        started = time.monotonic()
        d = self.stack.kafka_dir if name == "kafka" else self.stack.redis_dir
        port = self.settings.kafka_port if name == "kafka" else self.settings.redis_port
        pid = self._pid(name)
        if sig == signal.SIGKILL and pid is not None:
            os.kill(pid, signal.SIGKILL)
        stop_pid(name, pid, d / f"{name}.pid", self.settings.bind_host, port)
        return time.monotonic() - started

    def start(self, name: str) -> float:
        started = time.monotonic()
        if name == "kafka":
            self.stack.start_kafka()
        else:
            self.stack.start_redis()
        return time.monotonic() - started


def end_scenario(api: ApiProcess, store: RedisStore, loaders: Iterable[Loader | None] = (),
                 workers: Iterable[ChildProcess | None] = ()) -> None:
    """What every scenario's ``finally`` ends: load generators and workers killed (SIGKILL: nothing to
    wait for), the API stopped, the Redis client closed."""
    for loader in loaders:
        if loader is not None:
            loader.stop()
            loader.kill()
    for worker in workers:
        if worker is not None:
            worker.kill()
    api.stop()
    store.close()


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def readyz(api_url: str) -> dict[str, Any] | None:
    """The API's /readyz body when it answers 200 (None otherwise, including when it does not answer)."""
    import httpx

    try:
        resp = httpx.get(api_url + "/readyz", timeout=5)
    except httpx.HTTPError:
        return None
    return dict(resp.json()) if resp.status_code == 200 else None


def served_version(api_url: str) -> str | None:
    body = readyz(api_url)
    return None if body is None else body.get("model_version")


def all_alive(procs: Iterable[subprocess.Popen[bytes]]) -> bool:
    return all(p.poll() is None for p in procs)
