"""Each process's /metrics exposes the series the dashboard and alerts use, with values that match what
the process did, on real Kafka and Redis. (The lag exporter's are checked in test_lag.py.)"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from online_api.server import free_port
from streamrec import simulate
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import current_version
from tests.helpers.processes import ChildProcess, Started

Samples = dict[str, list[tuple[dict[str, str], float]]]


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


def wait_for(url: str, ready: Callable[[Samples], bool], proc: ChildProcess, timeout: float = 90.0) -> Samples:
    """Scrape ``url`` until ``ready``; fails with the process's log if it exits or time runs out."""
    last: Samples = {}

    def scraped_ready() -> bool:
        nonlocal last
        try:
            last = scrape(url)
        except OSError:
            return False
        return ready(last)

    proc.wait_until(scraped_ready, timeout, lambda: f"{url} to get ready; last scrape had {sorted(last)}", 0.5)
    return last


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


def test_batch_metrics_describe_the_last_refit(make_settings: Any, tmp_path: Path, procs: Started) -> None:
    settings = small_model(make_settings, tmp_path, batch_metrics_port=free_port())
    produce(settings, 2_000)
    before = time.time()
    proc = procs.streamrec(settings, "batch", "run", "--every", "1h", name="batch")
    url = f"http://127.0.0.1:{settings.batch_metrics_port}/metrics"
    m = wait_for(url, lambda m: value(m, "streamrec_batch_last_success_timestamp_seconds") > 0, proc)
    version = current_version(RedisStore(settings))
    assert version is not None
    assert before <= value(m, "streamrec_batch_last_success_timestamp_seconds") <= time.time()
    assert value(m, "streamrec_batch_duration_seconds") > 0
    assert value(m, "streamrec_batch_interactions") > 0
    assert value(m, "streamrec_batch_model_version_info", version=version) == 1
    assert value(m, "streamrec_batch_runs_total", result="success") == 1


def test_api_metrics_count_requests_fallbacks_and_the_model_served(make_settings: Any, tmp_path: Path,
                                                                  procs: Started) -> None:
    from batch.refit import run_refit

    settings = small_model(make_settings, tmp_path, api_port=free_port())
    users = produce(settings, 2_000)
    run_refit(settings)  # the real batch job publishes the model the API serves
    version = current_version(RedisStore(settings))
    proc = procs.streamrec(settings, "api", "--port", str(settings.api_port), name="api")
    base = f"http://127.0.0.1:{settings.api_port}"
    wait_for(f"{base}/metrics", lambda m: value(m, "streamrec_api_model_info", version=str(version)) == 1,
             proc)

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


def test_worker_metrics_count_what_it_applied_and_rejected(make_settings: Any, tmp_path: Path,
                                                           procs: Started) -> None:
    from collections import Counter

    from batch.refit import run_refit
    from streamrec.kafka_io import end_offsets

    settings = small_model(make_settings, tmp_path, worker_metrics_port=free_port())
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

    proc = procs.streamrec(settings, "worker", name="worker")
    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    m = wait_for(url, lambda m: value(m, "streamrec_worker_events_total") >= applied
                 and value(m, "streamrec_worker_dead_letters_total") >= 3, proc)
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
