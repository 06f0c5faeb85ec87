"""`streamrec stack` lifecycle on its own ports and data folder: up, status, idempotent up, busy port, down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.localstack import port_in_use
from streamrec.settings import REPO_ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True,
                          text=True, timeout=240, check=False)


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "STREAMREC_STACK_DIR": str(tmp_path / "stack"),
        "STREAMREC_KAFKA_LIBS_DIR": str(REPO_ROOT / ".stack" / "kafka-libs"),
        "STREAMREC_KAFKA_PORT": str(_free_port()),
        "STREAMREC_KAFKA_CONTROLLER_PORT": str(_free_port()),
        "STREAMREC_KAFKA_BOOTSTRAP": "",  # filled below
        "STREAMREC_REDIS_PORT": str(_free_port()),
    }


def test_stack_lifecycle(stack_env: dict[str, str]) -> None:
    env = stack_env
    env["STREAMREC_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{env['STREAMREC_KAFKA_PORT']}"
    kport, rport = int(env["STREAMREC_KAFKA_PORT"]), int(env["STREAMREC_REDIS_PORT"])
    try:
        up = _cli(env, "stack", "up")
        assert up.returncode == 0, up.stderr
        status = _cli(env, "stack", "status")
        assert status.returncode == 0
        assert "kafka  healthy" in status.stdout and "redis  healthy" in status.stdout
        pids = status.stdout

        again = _cli(env, "stack", "up")  # a second up while running changes nothing
        assert again.returncode == 0
        assert "already running" in again.stderr
        assert _cli(env, "stack", "status").stdout == pids
    finally:
        down = _cli(env, "stack", "down")
    assert down.returncode == 0
    assert not port_in_use("127.0.0.1", kport) and not port_in_use("127.0.0.1", rport)
    assert "DOWN" in _cli(env, "stack", "status").stdout


def test_stack_up_fails_naming_a_busy_port(stack_env: dict[str, str]) -> None:
    env = stack_env
    with socket.socket() as squatter:  # another program holds the Redis port
        squatter.bind(("127.0.0.1", int(env["STREAMREC_REDIS_PORT"])))
        squatter.listen()
        result = _cli(env, "stack", "up")
    assert result.returncode != 0
    assert f"port {env['STREAMREC_REDIS_PORT']}" in result.stderr
    assert "in use by another program" in result.stderr
