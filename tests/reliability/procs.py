"""Processes the reliability scenarios start, measure and kill: workers, the API, a private local stack.

Every process runs in its own session (process group) with the scenario's isolated settings in its
environment, logs to a file under the test's tmp directory, and is stopped by its owner's ``finally``.
Memory and sockets are read from /proc (Linux), so nothing beyond the standard library is needed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_api.server import free_port, settings_env
from streamrec.localstack import LocalStack, _read_pid, _stop_pid
from streamrec.settings import REPO_ROOT, Settings
from streamrec.store import RedisStore


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "OPENBLAS_NUM_THREADS": "1", **extra}


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    """Signal ``proc``'s process group; SIGKILL it when it outlives ``timeout_s``; always reaps it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Worker:
    """One ``streamrec worker`` subprocess (metrics on a free loopback port, per-batch stats file)."""

    def __init__(self, settings: Settings, directory: Path, name: str, log_level: str = "info") -> None:
        self.settings = settings
        self.log_path = directory / f"{name}.log"
        self.stats_path = directory / f"{name}.jsonl"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamrec.cli", "worker", "--metrics-port", "0", "--log-level", log_level,
                 "--stats-file", str(self.stats_path)],
                env=child_env(settings), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=REPO_ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def applied(self) -> int:
        """Events applied according to this process's per-batch stats (a SIGKILL can lose the last line)."""
        if not self.stats_path.exists():
            return 0
        total = 0
        for line in self.stats_path.read_text().splitlines():
            try:
                total += int(json.loads(line)["applied"])
            except (ValueError, KeyError):
                continue  # a line cut by SIGKILL
        return total

    def metrics_url(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(r"metrics on http://([\d.]+):(\d+)/metrics", self.log_path.read_text(errors="replace"))
            if found:
                return f"http://{found[1]}:{found[2]}/metrics"
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError("the worker never said where its metrics are:\n" + self.tail())
            time.sleep(0.2)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as resp:
            return str(resp.read().decode())

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to commit or clean up."""
        kill_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        kill_group(self.proc, signal.SIGTERM, 30.0)


def metric_sum(text: str, name: str, label_filter: str = "") -> float:
    """Sum of a Prometheus series' samples whose labels contain ``label_filter``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if label_filter in (m[1] or ""):
            total += float(m[2])
    return total


def applied_offsets(settings: Settings, store: RedisStore) -> dict[str, int]:
    raw = store.client.hgetall(store.keys.offsets(settings.consumer_group))
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


def wait_applied(settings: Settings, store: RedisStore, alive: Callable[[], bool], timeout_s: float,
                 describe: Callable[[], str] = lambda: "") -> float:
    """Until the applied offsets in Redis reach the topics' end offsets; returns the seconds waited."""
    from streamrec.kafka_io import end_offsets

    started = time.monotonic()
    target = {f"{t}:{p}": hi - 1 for (t, p), hi in end_offsets(settings, settings.event_topics).items() if hi > 0}
    while True:
        applied = applied_offsets(settings, store)
        left = sum(max(0, off - applied.get(f, -1)) for f, off in target.items())
        if left == 0:
            return time.monotonic() - started
        if not alive():
            raise AssertionError(f"the worker exited with {left} events left:\n{describe()}")
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{left} events not applied within {timeout_s:.0f}s:\n{describe()}")
        time.sleep(0.2)


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
        return _read_pid(d / f"{name}.pid")

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
        _stop_pid(name, pid, d / f"{name}.pid", self.settings.bind_host, port)
        return time.monotonic() - started

    def start(self, name: str) -> float:
        started = time.monotonic()
        if name == "kafka":
            self.stack.start_kafka()
        else:
            self.stack.start_redis()
        return time.monotonic() - started


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


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
