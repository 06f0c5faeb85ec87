"""Batch killed mid-publish: SIGKILL ``streamrec batch run`` while it writes a model version to Redis. The
previous version keeps serving (the API answers every read with it), and the next run succeeds, publishes,
and is served; the half-written version is removed.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_batch_kill.py -v``
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from online_api.server import ApiProcess
from streamrec.settings import REPO_ROOT, Settings
from streamrec.store import RedisStore, as_str
from streamrec.store.models import current_version, list_versions, load_model
from tests.helpers.processes import child_env, kill_group, run_cli, wait_until
from tests.reliability.common import strip_ids, write_spec
from tests.reliability.load import Loader
from tests.reliability.procs import RssSampler, end_scenario, served_version
from tests.reliability.record import record

EVENTS = 300_000
USERS = 100_000
ITEMS = 5_000
READ_RPS = 50


def batch_run(s: Settings) -> dict[str, Any]:
    run = run_cli(s, "batch", "run", timeout_s=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def partial_versions(store: RedisStore) -> dict[str, dict[str, Any]]:
    """Versions with keys in Redis that are neither current nor listed (what a killed publish leaves)."""
    p = store.keys.prefix
    listed = {v for v, _ in list_versions(store)} | {current_version(store)}
    found: dict[str, dict[str, Any]] = {}
    for raw in store.client.scan_iter(match=f"{p}:model:*:*", count=10_000):
        key = as_str(raw)
        version, _, part = key[len(p) + 7 :].partition(":")
        if version not in listed:
            found.setdefault(version, {})[part] = key
    out = {}
    for version, parts in found.items():
        users = store.client.hlen(parts["users"]) if "users" in parts else 0
        out[version] = {"parts": sorted(parts), "users_written": users}
    return out


def kill_mid_publish(s: Settings, delay_s: float, log: Path) -> float:
    """Start a run, SIGKILL it ``delay_s`` after it says it is publishing; returns when it was killed."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "batch", "run"], env=child_env(s),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                                start_new_session=True)
        killed = threading.Event()
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                out.write(line)
                if "; publishing" in line:
                    time.sleep(delay_s)
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.set()
                    break
            proc.wait(60)
        finally:
            kill_group(proc, signal.SIGKILL)
    assert killed.is_set(), f"the run never reached publishing:\n{log.read_text()[-3000:]}"
    return delay_s


def test_batch_killed_mid_publish_keeps_the_previous_model_and_the_next_run_succeeds(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings(als_factors=64, als_iterations=2)
    store = RedisStore(s)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    loaders: list[Loader] = []
    try:
        seed = Loader("events", s, tmp_path, "events", "--rate", "0", "--count", str(EVENTS), "--pool",
                      str(EVENTS), "--users", str(USERS), "--items", str(ITEMS))
        loaders.append(seed)
        seed.wait(600)
        first = batch_run(s)
        v1 = first["version"]
        api.start()
        api.wait_for("/readyz")
        model = load_model(store, v1)
        assert model is not None
        spec = write_spec(tmp_path / "reads.json", [
            {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 4, "kind": "recommendations"},
            {"method": "GET", "path": "/v1/items/{item}/similar?k=10", "weight": 1, "kind": "similar"}],
            users=[f"u{i}" for i in range(1_000)], items=model.item_ids[:2_000])
        reads = Loader("http", s, tmp_path, "reads", "--url", api.url, "--spec", str(spec), "--rate", str(READ_RPS),
                       "--duration", "3600", "--connections", "2")
        loaders.append(reads)
        rss = RssSampler({"api": api.pid}, every_s=5.0).start()

        attempts: list[dict[str, Any]] = []
        partial: dict[str, dict[str, Any]] = {}
        for n, share in enumerate((0.3, 0.1, 0.6)):  # until the kill lands while the version is being written
            delay = share * float(first["publish_s"])
            kill_mid_publish(s, delay, tmp_path / f"killed-run-{n}.log")
            partial = partial_versions(store)
            served = httpx.get(api.url + "/readyz", timeout=10).json()["model_version"]
            attempts.append({"kill_after_publishing_s": round(delay, 2), "partial_versions": partial,
                             "current": current_version(store), "api_serving": served})
            if current_version(store) != v1:  # too late: that run completed; it is the baseline now
                v1 = current_version(store)
                continue
            if partial:
                break
        assert partial, f"no kill landed mid-publish: {attempts}"
        current_after_kill = current_version(store)
        probe = httpx.get(f"{api.url}/v1/users/u1/recommendations", timeout=10).json()
        time.sleep(3)  # the API keeps serving (reads continue meanwhile)
        served_after_kill = httpx.get(api.url + "/readyz", timeout=10).json()["model_version"]

        second = batch_run(s)
        v2 = second["version"]
        switched = wait_until(lambda: served_version(api.url) == v2, 60,
                              "the API serving the next version")
        left_over = partial_versions(store)
        reads.stop()
        read_result = reads.wait(120)
        rss.stop()
        record("batch_killed_mid_publish", {
            "command": "pytest -m reliability tests/reliability/test_batch_kill.py",
            "events": EVENTS, "first_run": {k: first[k] for k in ("version", "n_users", "n_items", "publish_s")},
            "kill_attempts": attempts, "current_after_kill": current_after_kill,
            "api_serving_after_kill": served_after_kill, "probe_model_version": probe.get("model_version"),
            "next_run": {k: second.get(k) for k in ("version", "n_users", "n_items", "publish_s", "total_s",
                                                    "abandoned_versions_removed")},
            "api_switched_after_s": round(switched, 1), "partial_versions_after_next_run": left_over,
            "reads": strip_ids(read_result), "rss": rss.start_end()})
        assert current_after_kill == v1 and served_after_kill == v1 and probe.get("model_version") == v1
        assert v2 != v1 and current_version(store) == v2
        assert not left_over, f"half-written versions left in Redis: {left_over}"
        assert set(read_result["status"]) == {"200"} and not read_result["errors"], strip_ids(read_result)
    finally:
        end_scenario(api, store, loaders)
