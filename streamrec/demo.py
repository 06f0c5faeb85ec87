"""`streamrec demo`: the whole system on this machine, and where to look.

Starts the local stack, then each process as a child with its log under ``.stack/logs``; prints what
runs where; on Ctrl-C stops the children (and the stack, when the demo started it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from streamrec.localstack import LocalStack, main_progress
from streamrec.settings import Settings


@dataclass
class Child:
    """A process the demo started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def _start(name: str, args: list[str], logs: Path, env: dict[str, str]) -> Child:
    log = logs / f"{name}.log"
    out = open(log, "ab")  # noqa: SIM115 - the child owns the file for its lifetime
    proc = subprocess.Popen([sys.executable, "-m", "streamrec.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return Child(name, proc, log)


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in reversed(children):
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


def run(settings: Settings, *, rate: float = 100.0, seed: int = 42, keep_stack: bool = False) -> int:
    """Run the demo until Ctrl-C. Returns the exit code."""
    stack = LocalStack(settings, progress=main_progress)
    was_up = all(s.healthy for s in stack.status())
    stack.up()
    logs = Path(settings.stack_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    children: list[Child] = []
    try:
        children.append(_start("simulate", ["simulate", "--rate", str(rate), "--duration", "31536000",
                                            "--seed", str(seed), "--catalog"], logs, env))
        print(
            "\nstreamrec demo is running\n"
            f"  kafka       {settings.kafka_bootstrap}  topics {', '.join(settings.event_topics)}\n"
            f"  redis       {settings.redis_url}\n"
            f"  traffic     simulate at {rate:g} events/s  (log: {logs / 'simulate.log'})\n"
            "  status      streamrec stack status\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    print(f"{child.name} exited with {code}; last log lines:", file=sys.stderr)
                    print("\n".join(child.log.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        _stop(children)
        if not was_up and not keep_stack:
            stack.down()
