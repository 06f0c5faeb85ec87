"""Soak: 5,000 events/s into Kafka and 500 requests/s against the API on loopback for 10 minutes.

Each streamrec process's memory (RSS, sampled every 10 s) stays flat: the median of the last minute is
within 10% of the median of the second minute (the first minute is warm-up: caches and histories fill).
Consumer lag stays bounded, every request answers 2xx, nothing is dead-lettered or retried, and at the
end every event is applied exactly once. Kafka's and Redis's RSS are reported too; they are data stores
whose memory follows their data (Redis keeps an hour of event ids for de-duplication), so they are not
held to flatness.

``STREAMREC_SOAK_S`` sets the duration (default 600; ``make reliability`` runs the full 10 minutes).
Reproduce: ``STREAMREC_SOAK_S=600 .venv/bin/pytest -m reliability tests/reliability/test_soak.py -v``
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from online_api.server import ApiProcess
from ops.bench_stream import cpu_seconds, publish_model
from ops.lag import measure
from streamrec.kafka_io import end_offsets
from streamrec.settings import Settings
from streamrec.stack_processes import read_pid
from streamrec.store import RedisStore
from tests.helpers.processes import Worker, applied_offsets
from tests.reliability.common import exactly_once, strip_ids, user_counts, write_spec
from tests.reliability.conftest import soak_seconds
from tests.reliability.load import Loader
from tests.reliability.procs import RssSampler, end_scenario, metric_sum
from tests.reliability.record import record

EVENTS_PER_S = 5_000
REQUESTS_PER_S = 500
USERS = 5_000
ITEMS = 2_000
KEY = "soak-key-0123456789abcdef"
FLAT = 1.10  # last-minute median RSS at most 10% above the second minute's
MAX_LAG_S = 30.0


def windows(duration: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(early, late) sample windows in seconds: the 2nd minute and the last minute of a full run."""
    if duration >= 240:
        return (60.0, 120.0), (duration - 60.0, duration + 30.0)
    return (duration * 0.25, duration * 0.5), (duration * 0.75, duration + 30.0)


def median_in(samples: list[tuple[float, float]], window: tuple[float, float]) -> float | None:
    values = [v for t, v in samples if window[0] <= t < window[1]]
    return statistics.median(values) if values else None


def quantile_from_buckets(text: str, name: str, q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of a Prometheus histogram."""
    buckets = sorted((float("inf") if le == "+Inf" else float(le), float(n))
                     for le, n in re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, n in buckets if n >= q * total)


class LagSampler:
    """Every 10 s: Kafka-committed lag of the worker's group (messages, oldest event age) and the applied lag."""

    def __init__(self, settings: Settings, store: RedisStore, t0: float) -> None:
        self.s, self.store, self.t0 = settings, store, t0
        self.samples: list[dict[str, float]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(10.0):
            try:
                group = measure(self.s, [self.s.consumer_group])[0]
                ends = end_offsets(self.s, self.s.event_topics)
                applied = applied_offsets(self.s, self.store)
                behind = sum(max(0, hi - 1 - applied.get(f"{t}:{p}", -1)) for (t, p), hi in ends.items())
                self.samples.append({"t": round(time.monotonic() - self.t0, 1), "lag": group.total_lag,
                                     "lag_s": group.max_lag_seconds, "applied_lag": behind})
            except Exception:
                self.errors += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_soak_memory_flat_lag_bounded_no_errors(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    duration = soak_seconds()
    s = make_settings(api_keys=KEY, history_cap=50, worker_session_timeout_s=10.0)
    publish_model(s, ITEMS, s.als_factors, seed=9)
    store = RedisStore(s)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    worker: Worker | None = None
    loaders: list[Loader] = []
    try:
        api.start()
        api.wait_for("/readyz")
        worker = Worker(s, tmp_path, "worker")
        worker.metrics_url()
        spec = write_spec(tmp_path / "mix.json", [
            {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 80, "kind": "recommendations"},
            {"method": "GET", "path": "/v1/items/{item}/similar?k=10", "weight": 10, "kind": "similar"},
            {"method": "GET", "path": "/v1/trending?window=1h", "weight": 5, "kind": "trending"},
            {"method": "POST", "path": "/v1/events", "events": 1, "weight": 5, "kind": "collector"}],
            users=[f"u{i}" for i in range(USERS)], items=[f"i{i}" for i in range(ITEMS)], key=KEY)
        stack = Settings()
        pids = {"worker": worker.pid, "api": api.pid}
        for name in ("kafka", "redis"):
            pid = read_pid(Path(stack.stack_dir) / name / f"{name}.pid")
            if pid:
                pids[name] = pid
        t0 = time.monotonic()
        events = Loader("events", s, tmp_path, "events", "--rate", str(EVENTS_PER_S), "--duration", str(duration),
                        "--users", str(USERS), "--items", str(ITEMS))
        requests = Loader("http", s, tmp_path, "requests", "--url", api.url, "--spec", str(spec), "--rate",
                          str(REQUESTS_PER_S), "--duration", str(duration), "--connections", "16")
        loaders += [events, requests]
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        rss = RssSampler(pids, every_s=10.0).start()
        lag = LagSampler(s, store, t0).start()
        produced = events.wait(duration + 300)
        served = requests.wait(duration + 300)
        load_s = time.monotonic() - t0
        cpu = {name: round((cpu_seconds(pid) - cpu0[name]) / load_s * 100, 1) for name, pid in pids.items()}
        lag.stop()
        rss.stop()
        drain_s = worker.wait_applied(store, 120)
        metrics = worker.metrics()

        early, late = windows(duration)
        memory: dict[str, dict[str, Any]] = {}
        for name, samples in rss.samples.items():
            a, b = median_in(samples, early), median_in(samples, late)
            memory[name] = {"start_mb": samples[0][1], "end_mb": samples[-1][1], "early_median_mb": a,
                            "late_median_mb": b, "growth": None if not a or not b else round(b / a - 1, 4)}
        expected = dict(produced["per_user"])
        for user, n in served["accepted_per_user"].items():
            expected[user] = expected.get(user, 0) + n
        counts = exactly_once(expected, user_counts(store))
        statuses = served["status"]
        non_2xx = {code: n for code, n in statuses.items() if not code.startswith("2")}
        figures = {
            "command": f"STREAMREC_SOAK_S={duration:g} pytest -m reliability tests/reliability/test_soak.py",
            "duration_s": duration, "events_sent": produced["sent"], "events_rate": produced["rate"],
            "events_undelivered": produced["undelivered"] + sum(produced["failed"].values()),
            "collector_events_accepted": sum(served["accepted_per_user"].values()), **counts,
            "requests": strip_ids(served), "non_2xx": non_2xx,
            "lag": {"samples": len(lag.samples), "max_lag_messages": max((x["lag"] for x in lag.samples), default=None),
                    "max_lag_s": max((x["lag_s"] for x in lag.samples), default=None),
                    "max_applied_lag_messages": max((x["applied_lag"] for x in lag.samples), default=None),
                    "last": lag.samples[-1] if lag.samples else None, "measure_errors": lag.errors},
            "drain_after_load_s": round(drain_s, 1),
            "freshness_p50_s_bucket": quantile_from_buckets(metrics, "streamrec_worker_freshness_seconds", 0.5),
            "freshness_p99_s_bucket": quantile_from_buckets(metrics, "streamrec_worker_freshness_seconds", 0.99),
            "worker_dead_letters": metric_sum(metrics, "streamrec_worker_dead_letters_total"),
            "worker_retries": {kind: metric_sum(metrics, "streamrec_worker_retries_total", f'kind="{kind}"')
                               for kind in ("conflict", "model", "infrastructure", "bug")},
            "memory": memory, "memory_windows_s": {"early": early, "late": late}, "rss_samples": rss.samples,
            "cpu_percent_of_one_core": cpu,
        }
        record("soak", figures)
        assert produced["rate"] >= 0.97 * EVENTS_PER_S and served["rps"] >= 0.97 * REQUESTS_PER_S, figures
        assert figures["events_undelivered"] == 0
        assert not non_2xx and not served["errors"], (non_2xx, served["errors"])
        assert counts["lost"] == 0 and counts["doubled"] == 0, counts
        assert figures["worker_dead_letters"] == 0
        assert figures["worker_retries"]["infrastructure"] == 0 and figures["worker_retries"]["bug"] == 0
        for name in ("worker", "api"):
            assert memory[name]["growth"] is not None and memory[name]["growth"] <= FLAT - 1, (name, memory[name])
        assert lag.samples and figures["lag"]["max_lag_s"] <= MAX_LAG_S, figures["lag"]
        assert worker.alive() and api.proc is not None and api.proc.poll() is None
    finally:
        end_scenario(api, store, loaders, [worker])
