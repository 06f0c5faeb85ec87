"""Processes of the local stack: start one in its own session, check it, stop it, and the types shared by
:mod:`streamrec.localstack` (Kafka, Redis) and :mod:`streamrec.localcluster` (the Redis Cluster)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Progress = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not be set up, started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status`` reports for one server."""

    name: str
    pid: int | None
    port: int
    healthy: bool
    detail: str


def say(progress: Progress | None, msg: str) -> None:
    """Report ``msg`` to ``progress`` when there is one."""
    if progress is not None:
        progress(msg)


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def port_bindable(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now: nothing listens there and no socket holds it
    (an outgoing connection's local port is in use without accepting connections)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int | None) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    """The pid written in ``path``; None when it is missing or unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log written)"
    return "\n".join(text[-lines:])


def spawn(cmd: list[str], log: Path, pidfile: Path, env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` in a session of its own, output appended to ``log``; writes and returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session, so Ctrl-C in the caller's terminal does not reach the server.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd=str(log.parent),
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def stop_pid(name: str, pid: int | None, pidfile: Path, host: str, port: int, timeout: float = 30.0) -> bool:
    """SIGTERM ``pid`` (SIGKILL after ``timeout``), wait until ``host:port`` is free; False if it was not running."""
    if not pid_alive(pid):
        pidfile.unlink(missing_ok=True)
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):  # reap it when it is our child, so no zombie stays behind
        os.waitpid(pid, os.WNOHANG)
    deadline = time.monotonic() + 10
    while port_in_use(host, port) and time.monotonic() < deadline:
        time.sleep(0.2)
    pidfile.unlink(missing_ok=True)
    return True
