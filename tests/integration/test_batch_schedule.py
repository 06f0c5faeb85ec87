"""`streamrec batch run --every`: a failed run waits for the next one; metrics say what happened."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import current_version, list_versions
from tests.integration.test_batch import produce_sim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    """The scraped samples without labels, plus ``runs{result}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("streamrec_batch_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:  # the metrics server is not up yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_scheduled_runs_survive_a_failure_and_export_metrics(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(batch_snapshot_dir=tmp_path / "snapshot", als_factors=8, als_iterations=2,
                             batch_metrics_port=port)
    values = settings.model_dump(exclude_none=True)
    env = {**os.environ, **{f"STREAMREC_{k.upper()}": str(v) for k, v in values.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "batch", "run", "--every", "2s"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # nothing to fit yet: the run fails, says why, and the loop keeps going
        wait_for(lambda: metrics(port).get('streamrec_batch_runs_total{result="failure"}', 0) >= 1, 30,
                 "a failed run")
        assert metrics(port)["streamrec_batch_last_success_timestamp_seconds"] == 0
        produce_sim(settings, 500, 1)
        wait_for(lambda: metrics(port).get("streamrec_batch_last_success_timestamp_seconds", 0) > 0, 40,
                 "a successful run")
        m = metrics(port)
        assert m["streamrec_batch_interactions"] > 0 and m["streamrec_batch_events_read"] == 500
        info = [k for k in m if k.startswith("streamrec_batch_model_version_info")]
        assert len(info) == 1
        published = info[0].split('version="')[1].split('"')[0]
        store = RedisStore(settings)
        assert published in {v for v, _ in list_versions(store)}
        assert (current_version(store) or "") >= published  # later runs only move forward
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "no interactions to fit" in err and "the current model keeps serving" in err
    assert '"version"' in out
