"""Each process's /metrics exposes the series the dashboard and alerts use, with values that match what
the process did, on real Kafka and Redis. (The lag exporter's are checked in test_lag.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrec import simulate
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import current_version

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"STREAMREC_{name.upper()}"] = str(value)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `streamrec <args>` with the given settings, logging to a file; stops it after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "streamrec.cli", *args], env=_env(settings),
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def scrape(url: str) -> Samples:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def wait_for(url: str, ready: Callable[[Samples], bool], proc: subprocess.Popen[bytes], log: Path,
             timeout: float = 90.0) -> Samples:
    deadline, last = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            last = scrape(url)
            if ready(last):
                return last
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} never got ready; last scrape had {sorted(last)}\n{log.read_text()[-3000:]}")


def produce(settings: Settings, count: int, seed: int = 11) -> list[str]:
    """Simulated storefront events; returns the user ids that clicked."""
    producer = EventProducer(settings)
    users: list[str] = []

    def emit(event: Any) -> None:
        users.append(event.user_id)
        producer.send(event)

    simulate.run(emit, rate=0, count=count, store=simulate.Storefront(simulate.SimConfig(seed=seed, users=300,
                                                                                         items=200)))
    assert producer.flush(30) == 0
    return users


def small_model(make_settings: Callable[..., Settings], tmp_path: Path, **extra: Any) -> Settings:
    return make_settings(batch_snapshot_dir=tmp_path / "snapshot", als_factors=8, als_iterations=3, **extra)


def test_batch_metrics_describe_the_last_refit(make_settings: Any, tmp_path: Path, start: Any) -> None:
    settings = small_model(make_settings, tmp_path, batch_metrics_port=_free_port())
    produce(settings, 2_000)
    log = tmp_path / "batch.log"
    before = time.time()
    proc = start(settings, log, "batch", "run", "--every", "1h")
    url = f"http://127.0.0.1:{settings.batch_metrics_port}/metrics"
    m = wait_for(url, lambda m: value(m, "streamrec_batch_last_success_timestamp_seconds") > 0, proc, log)
    version = current_version(RedisStore(settings))
    assert version is not None
    assert before <= value(m, "streamrec_batch_last_success_timestamp_seconds") <= time.time()
    assert value(m, "streamrec_batch_duration_seconds") > 0
    assert value(m, "streamrec_batch_interactions") > 0
    assert value(m, "streamrec_batch_model_version_info", version=version) == 1
    assert value(m, "streamrec_batch_runs_total", result="success") == 1


def test_api_metrics_count_requests_fallbacks_and_the_model_served(make_settings: Any, tmp_path: Path,
                                                                  start: Any) -> None:
    from batch.refit import run_refit

    settings = small_model(make_settings, tmp_path, api_port=_free_port())
    users = produce(settings, 2_000)
    run_refit(settings)  # the real batch job publishes the model the API serves
    version = current_version(RedisStore(settings))
    log = tmp_path / "api.log"
    proc = start(settings, log, "api", "--port", str(settings.api_port))
    base = f"http://127.0.0.1:{settings.api_port}"
    wait_for(f"{base}/metrics", lambda m: value(m, "streamrec_api_model_info", version=str(version)) == 1,
             proc, log)

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            assert resp.status == 200
            body: dict[str, Any] = json.loads(resp.read())
            return body

    known = users[0]
    for _ in range(3):
        get(f"/v1/users/{known}/recommendations")
    get("/v1/users/someone-never-seen/recommendations")
    m = scrape(f"{base}/metrics")
    route = "/v1/users/{user_id}/recommendations"
    assert value(m, "streamrec_api_request_duration_seconds_count", route=route, status="200") == 4
    assert value(m, "streamrec_api_request_duration_seconds_bucket", route=route, status="200", le="+Inf") == 4
    assert value(m, "streamrec_api_recommendations_total", kind="personal") == 3
    assert value(m, "streamrec_api_recommendations_total", kind="fallback") == 1
    assert value(m, "streamrec_api_model_info", version=str(version)) == 1


def test_worker_metrics_count_what_it_applied_and_rejected(make_settings: Any, tmp_path: Path, start: Any) -> None:
    from collections import Counter

    from batch.refit import run_refit
    from streamrec.kafka_io import end_offsets

    settings = small_model(make_settings, tmp_path, worker_metrics_port=_free_port())
    producer = EventProducer(settings)
    by_topic_type: Counter[tuple[str, str]] = Counter()

    def emit(event: Any) -> None:
        by_topic_type[(settings.topic_for(event.type.value), event.type.value)] += 1
        producer.send(event)

    simulate.run(emit, rate=0, count=1_500, store=simulate.Storefront(simulate.SimConfig(seed=3, users=300,
                                                                                         items=200)))
    for raw in (b"{not json", b"[1, 2]", b"{\"also\": \"not json"):
        producer.send_raw(settings.topic_clicks, b"u-bad", raw)
    assert producer.flush(30) == 0
    run_refit(settings)  # a model to fold against, so the fold-in path runs
    applied = sum(by_topic_type.values())

    log = tmp_path / "worker.log"
    proc = start(settings, log, "worker")
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    m = wait_for(url, lambda m: value(m, "streamrec_worker_events_total") >= applied
                 and value(m, "streamrec_worker_dead_letters_total") >= 3, proc, log)
    for (topic, etype), n in by_topic_type.items():
        assert value(m, "streamrec_worker_events_total", topic=topic, type=etype) == n
    assert value(m, "streamrec_worker_dead_letters_total", reason="bad_json") == 2
    assert value(m, "streamrec_worker_dead_letters_total", reason="not_object") == 1
    # Freshness is observed once per applied event; batch sizes add up to every record read.
    assert value(m, "streamrec_worker_freshness_seconds_count") == applied
    assert value(m, "streamrec_worker_freshness_seconds_bucket", le="+Inf") == applied
    assert value(m, "streamrec_worker_batch_size_sum") == applied + 3
    assert value(m, "streamrec_worker_foldin_seconds_count") >= 1
    # The applied offset per partition is the last record of each partition.
    for (topic, partition), end in end_offsets(settings, settings.event_topics).items():
        if end:
            assert value(m, "streamrec_worker_applied_offset", topic=topic, partition=str(partition)) == end - 1
