"""Run the API as a real uvicorn subprocess (for the benchmark, integration tests and the demo)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from streamrec.settings import Settings


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as STREAMREC_* variables, so a child process builds the same Settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value) \
            if not isinstance(value, Path) else os.fspath(value)
        env[f"STREAMREC_{name.upper()}"] = text
    return env


class ApiProcess:
    """``streamrec api`` (one uvicorn worker) in its own process group on 127.0.0.1; stop() always ends it."""

    def __init__(self, settings: Settings, *, port: int | None = None, log_level: str = "warning",
                 log_path: Path | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_level = log_level
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: str | None = "/healthz", timeout_s: float = 60.0) -> ApiProcess:
        """Start, then wait until ``wait`` answers 200 (``/readyz`` also needs a model; None: no wait)."""
        env = {**os.environ, **settings_env(self.settings), "OPENBLAS_NUM_THREADS": "1"}
        # ``streamrec api`` itself (online_api.cli.serve): the same uvicorn setup as in production.
        cmd = [sys.executable, "-m", "ops.cli", "api", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--log-level", self.log_level]
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True)
        if wait:
            self.wait_for(wait, timeout_s)
        return self

    def wait_for(self, path: str, timeout_s: float = 60.0) -> None:
        """Poll ``path`` until it answers 200; raises if the process exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited with code {self.proc.returncode}{self._log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url}{path} did not answer 200 within {timeout_s:.0f}s{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        """The end of the API's log, for error messages (empty when it logs to the parent's output)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "; its log ends:\n" + "\n".join(text)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the process group (graceful: flushes the producer), SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ApiProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
