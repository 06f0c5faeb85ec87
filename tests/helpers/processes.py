"""Processes tests start: ``streamrec <command>`` (or another module) with a test's isolated settings.

One implementation for the integration and reliability tests of: start a process with these settings,
wait until it is ready or has applied the events, stop it, and quote its log when it dies or a wait times
out. Every process runs in a session (process group) of its own, so stopping it also stops whatever it
started; its output goes to a log file under the test's directory.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from online_api.server import settings_env
from streamrec.settings import REPO_ROOT, Settings
from streamrec.store import RedisStore

CLI = "ops.cli"


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a child process that builds exactly ``settings``."""
    # STREAMREC_* of the shell running the tests are left out: settings_env skips fields that are None, and
    # an inherited value would set them in the child only.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    return {**inherited, **settings_env(settings), "OPENBLAS_NUM_THREADS": "1", **extra}


def run_cli(settings: Settings, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``streamrec <args>`` to completion with ``settings``; output captured as text."""
    return subprocess.run([sys.executable, "-m", CLI, *args], env=child_env(settings), capture_output=True,
                          text=True, timeout=timeout_s, cwd=REPO_ROOT)


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
    """The last ``lines`` lines of a log file (what failure messages quote)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ChildProcess:
    """``python -m <module> <args>`` (``streamrec <args>`` by default) started now with ``settings``."""

    def __init__(self, settings: Settings, *args: str, log_path: Path, module: str = CLI) -> None:
        self.settings = settings
        self.log_path = log_path
        prog = "streamrec" if module == CLI else f"python -m {module}"
        self.label = f"{prog} {args[0]}" if args else prog
        with log_path.open("ab") as log:  # the child has its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=child_env(settings),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=REPO_ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def assert_alive(self) -> None:
        """Fail with the end of the log when the process has exited."""
        if not self.alive():
            raise AssertionError(f"`{self.label}` exited with code {self.proc.returncode}:\n{self.tail()}")

    def wait_until(self, check: Callable[[], bool], timeout_s: float, what: str | Callable[[], str],
                   poll_s: float = 0.2) -> float:
        """:func:`wait_until`, failing at once (with the log) if this process exits meanwhile."""
        return wait_until(check, timeout_s, what, poll_s, watch=(self,))

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout_s``); returns the exit code (negative: killed by that signal)."""
        kill_group(self.proc, signal.SIGTERM, timeout_s)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to commit or clean up."""
        kill_group(self.proc, signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.2,
               watch: Sequence[ChildProcess] = ()) -> float:
    """Poll ``check`` until it is true; returns the seconds waited. Fails when time runs out or a process
    in ``watch`` exits (quoting its log); ``what`` (or what it returns, at the failure) names the wait."""
    started = time.monotonic()
    while True:
        for proc in watch:
            if not proc.alive():
                raise AssertionError(f"`{proc.label}` exited with code {proc.proc.returncode} while waiting for "
                                     f"{what if isinstance(what, str) else what()}:\n{proc.tail()}")
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            described = what if isinstance(what, str) else what()
            logs = "".join(f"\n--- {p.log_path.name}:\n{p.tail()}" for p in watch)
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {described}{logs}")
        time.sleep(poll_s)


def applied_offsets(settings: Settings, store: RedisStore) -> dict[str, int]:
    """``topic:partition`` -> the last offset the workers of ``settings``' group applied (from Redis)."""
    from streamrec.store.users import applied_offsets as stored

    return stored(store, settings.consumer_group)


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


class Worker(ChildProcess):
    """``streamrec worker`` logging to ``<directory>/<name>.log``, with metrics on a free loopback port and
    per-batch stats in ``<directory>/<name>.jsonl``."""

    def __init__(self, settings: Settings, directory: Path, name: str = "worker", log_level: str = "info") -> None:
        self.stats_path = directory / f"{name}.jsonl"
        super().__init__(settings, "worker", "--metrics-port", "0", "--log-level", log_level, "--stats-file",
                         str(self.stats_path), log_path=directory / f"{name}.log")

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

    def wait_applied(self, store: RedisStore, timeout_s: float) -> float:
        """Until this worker applied every event in the topics; returns the seconds waited."""
        return wait_applied(self.settings, store, self.alive, timeout_s, self.tail)

    def metrics_url(self, timeout_s: float = 30.0) -> str:
        """Where the worker serves /metrics (it logs the port it got), once it started."""
        url = ""

        def logged() -> bool:
            nonlocal url
            found = re.search(r"metrics on http://([\d.]+):(\d+)/metrics", self.log_path.read_text(errors="replace"))
            url = f"http://{found[1]}:{found[2]}/metrics" if found else ""
            return bool(url)

        self.wait_until(logged, timeout_s, "the worker to say where its metrics are")
        return url

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as resp:
            return str(resp.read().decode())


class Started:
    """The processes one test started, with logs under ``directory``; :meth:`stop_all` stops those still
    running (use :func:`started` as the body of a fixture)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[ChildProcess] = []

    def streamrec(self, settings: Settings, *args: str, name: str) -> ChildProcess:
        """``streamrec <args>`` logging to ``<directory>/<name>.log``."""
        proc = ChildProcess(settings, *args, log_path=self.directory / f"{name}.log")
        self.procs.append(proc)
        return proc

    def worker(self, settings: Settings, name: str | None = None, log_level: str = "info") -> Worker:
        """A :class:`Worker`; named ``worker-0``, ``worker-1``, ... in start order unless ``name`` says."""
        name = name or f"worker-{sum(isinstance(p, Worker) for p in self.procs)}"
        proc = Worker(settings, self.directory, name, log_level)
        self.procs.append(proc)
        return proc

    def stop_all(self, timeout_s: float = 30.0) -> None:
        for proc in self.procs:
            proc.stop(timeout_s)


@contextmanager
def started(directory: Path) -> Iterator[Started]:
    """A :class:`Started` whose processes are stopped when the block ends, however it ends."""
    procs = Started(directory)
    try:
        yield procs
    finally:
        procs.stop_all()
