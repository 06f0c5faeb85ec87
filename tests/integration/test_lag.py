"""`streamrec lag` and its exporter on real Kafka and Redis.

A real confluent-kafka consumer in the worker's group stands in for the worker: it processes part of the
backlog, commits and stops (the worker is down while events keep arriving), then comes back and catches
up. The command under test runs as the user runs it, in its own process.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from online_api.server import free_port
from streamrec import simulate
from streamrec.kafka_io import EventProducer, end_offsets, read_range
from streamrec.settings import Settings
from tests.helpers.processes import Started, Worker, run_cli

TP = tuple[str, int]


def lag_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(settings, "lag", *args)


def lag_json(settings: Settings, *args: str) -> dict[str, Any]:
    res = lag_cli(settings, "--json", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def produce(settings: Settings, count: int, seed: int) -> None:
    producer = EventProducer(settings)
    simulate.run(producer.send, rate=0, count=count, store=simulate.Storefront(simulate.SimConfig(seed=seed)))
    assert producer.flush(30) == 0


class StandInWorker:
    """Consumes the event topics in the worker's group and commits what it processed, like the worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.consumer_group,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0})
        self.consumer.subscribe(settings.event_topics)

    def process(self, count: int | None, until: dict[TP, int] | None = None, timeout: float = 30.0) -> dict[TP, int]:
        """Process ``count`` events (or up to the ``until`` offsets), commit, and return the committed offsets."""
        done, deadline = 0, time.monotonic() + timeout
        position: dict[TP, int] = {}
        while time.monotonic() < deadline:
            if count is not None and done >= count:
                break
            if until is not None and all(position.get(tp, 0) >= end for tp, end in until.items() if end > 0):
                break
            msg = self.consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            position[(str(msg.topic()), int(msg.partition() or 0))] = int(msg.offset() or 0) + 1
            done += 1
        else:
            raise AssertionError(f"stand-in worker did not get there in {timeout} s: {position}")
        self.consumer.commit(offsets=[TopicPartition(t, p, off) for (t, p), off in position.items()],
                             asynchronous=False)
        return position

    def stop(self) -> None:
        self.consumer.close()


def partitions(report: dict[str, Any], group: str) -> dict[TP, dict[str, Any]]:
    return {(p["topic"], p["partition"]): p for p in report["groups"][group]["partitions"]}


def test_lag_grows_while_the_worker_is_stopped_then_drains_to_ok(make_settings: Any) -> None:
    # A window of 3 observations 1 s apart: STALLED after 2 s without a commit (defaults: 10 over 30 s).
    settings = make_settings(lag_window=3, lag_stall_s=2.0)
    group = settings.consumer_group
    produce(settings, 800, seed=1)
    worker = StandInWorker(settings)
    committed = worker.process(300)
    worker.stop()  # the worker goes down ...
    produce(settings, 400, seed=2)  # ... while events keep arriving

    ends = end_offsets(settings, settings.event_topics)
    before = time.time()
    report = lag_json(settings)
    after = time.time()
    parts = partitions(report, group)
    assert set(parts) == set(ends)  # every partition of both event topics, committed or not
    for tp, row in parts.items():
        resume = committed.get(tp, 0)  # never-committed partitions count from the log start
        assert row["log_end_offset"] == ends[tp]
        assert row["current_offset"] == committed.get(tp)
        assert row["lag"] == ends[tp] - resume
        if row["lag"] == 0:
            assert row["lag_seconds"] == 0
            continue
        # Lag in seconds is the age of the oldest unprocessed event: the one at the committed offset.
        (oldest,) = read_range(settings, {tp: resume}, {tp: resume + 1})
        assert before - oldest.timestamp_ms / 1000 - 0.01 <= row["lag_seconds"] <= after - oldest.timestamp_ms / 1000
    first_total = report["groups"][group]["total_lag"]
    assert first_total == 800 + 400 - 300
    assert report["groups"][group]["status"] == "LAGGING"
    assert report["groups"][group]["members"] == 0

    # Still stopped, more events: the lag grows, and once the window spans 2 s without a commit: STALLED.
    statuses = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        produce(settings, 20, seed=3 + len(statuses))
        report = lag_json(settings)
        statuses.append(report["groups"][group]["status"])
        if statuses[-1] == "STALLED":
            break
        time.sleep(0.5)
    assert statuses[-1] == "STALLED", statuses
    assert set(statuses) <= {"LAGGING", "STALLED"}
    assert report["groups"][group]["total_lag"] == first_total + 20 * len(statuses)
    stalled = [r for r in report["groups"][group]["partitions"] if r["status"] == "STALLED"]
    assert stalled and all(r["lag"] > 0 for r in stalled)

    # The worker starts again and catches up: lag drains to 0 and the status returns to OK.
    worker = StandInWorker(settings)
    try:
        worker.process(None, until=end_offsets(settings, settings.event_topics))
    finally:
        worker.stop()
    report = lag_json(settings)
    assert report["groups"][group]["status"] == "OK"
    assert report["groups"][group]["total_lag"] == 0
    for row in report["groups"][group]["partitions"]:
        assert row["lag"] == 0 and row["lag_seconds"] == 0 and row["status"] == "OK"
        caught_up = row["current_offset"] == row["log_end_offset"]
        assert caught_up or (row["current_offset"] is None and row["log_end_offset"] == 0)


def test_table_groups_topics_and_errors(make_settings: Any) -> None:
    settings = make_settings()
    produce(settings, 200, seed=5)
    worker = StandInWorker(settings)
    committed = worker.process(50)
    worker.stop()
    other = f"{settings.consumer_group}-other"  # a group that never consumed: no committed offsets

    res = lag_cli(settings, "--group", settings.consumer_group, other, "--topics", settings.topic_clicks)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                                "LAG-SECONDS", "STATUS"]
    rows = [ln.split() for ln in lines[1:] if ln.startswith(settings.consumer_group)
            and ln.split()[1] == settings.topic_clicks]
    # Both groups, only the clicks topic, every partition of it.
    assert {r[0] for r in rows} == {settings.consumer_group, other}
    assert len(rows) == 2 * settings.partitions
    ends = end_offsets(settings, [settings.topic_clicks])
    for r in rows:
        tp = (r[1], int(r[2]))
        current = committed.get(tp) if r[0] == settings.consumer_group else None
        assert r[3] == ("-" if current is None else str(current))
        assert int(r[5]) == ends[tp] - (current or 0)
    assert any(ln.startswith(f"{other}: LAGGING") for ln in lines)

    res = lag_cli(settings, "--topics", "no-such-topic-here")
    assert res.returncode == 1 and "no-such-topic-here" in res.stderr and "does not exist" in res.stderr


def _scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_exporter_serves_kafka_exporter_series(make_settings: Any, procs: Started) -> None:
    settings = make_settings()
    group = settings.consumer_group
    produce(settings, 300, seed=9)
    worker = StandInWorker(settings)
    committed = worker.process(100)
    worker.stop()
    ends = end_offsets(settings, settings.event_topics)
    port = free_port()
    proc = procs.streamrec(settings, "lag", "--serve", "--port", str(port), "--interval", "1", name="exporter")

    def labels(tp: TP) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"consumergroup": group, "topic": tp[0], "partition": str(tp[1])}.items()))

    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def shows_the_lag() -> bool:
        nonlocal metrics
        try:
            metrics = _scrape(port)
        except OSError:
            return False
        lags = metrics.get("kafka_consumergroup_lag", {})
        return all(lags.get(labels(tp)) == end - committed.get(tp, 0) for tp, end in ends.items())

    proc.wait_until(shows_the_lag, 30,
                    lambda: f"the exporter to show the lag: {metrics.get('kafka_consumergroup_lag')}", 0.3)
    assert metrics["streamrec_lag_exporter_up"][()] == 1
    for tp, end in ends.items():
        assert metrics["kafka_topic_partition_current_offset"][(("partition", str(tp[1])), ("topic", tp[0]))] == end
        if tp in committed:
            assert metrics["kafka_consumergroup_current_offset"][labels(tp)] == committed[tp]
        assert metrics["kafka_consumergroup_lag_seconds"][labels(tp)] >= 0
    assert metrics["kafka_consumergroup_status"][(("consumergroup", group),)] in (1, 2)  # LAGGING or STALLED
    total = sum(metrics["kafka_consumergroup_lag_sum"][(("consumergroup", group), ("topic", t))]
                for t in settings.event_topics)
    assert total == 300 - 100

    assert proc.stop(15) == 0  # SIGTERM: a clean exit


# ------------------------------------------------------------------------------------------ the real worker
def wait_drained(settings: Settings, worker: Worker, timeout: float = 60.0) -> dict[str, Any]:
    report: dict[str, Any] = {}

    def drained() -> bool:
        nonlocal report
        report = lag_json(settings)
        return bool(report["groups"][settings.consumer_group]["total_lag"] == 0)

    worker.wait_until(drained, timeout, lambda: f"the worker to drain the lag: {report}", poll_s=0.5)
    return report


def test_real_worker_stopped_lag_grows_and_stalls_then_drains_when_it_returns(
        make_settings: Any, procs: Started) -> None:
    settings = make_settings(lag_window=3, lag_stall_s=2.0)
    group = settings.consumer_group
    produce(settings, 400, seed=21)
    worker = procs.worker(settings, log_level="warning")
    report = wait_drained(settings, worker)
    assert report["groups"][group]["status"] == "OK" and report["groups"][group]["members"] == 1

    worker.stop()  # the worker stops while events keep arriving
    statuses, totals = [], []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        produce(settings, 50, seed=30 + len(statuses))
        report = lag_json(settings)
        statuses.append(report["groups"][group]["status"])
        totals.append(report["groups"][group]["total_lag"])
        if statuses[-1] == "STALLED":
            break
        time.sleep(0.3)
    # Lag counts exactly the events produced since the worker stopped, per partition from Kafka.
    assert totals == [50 * (i + 1) for i in range(len(totals))], totals
    # OK while the drained worker's zero lag is still in the window, then (LAGGING and) STALLED once the
    # window spans the stall time without a commit; never back.
    severity = {"OK": 0, "LAGGING": 1, "STALLED": 2}
    assert statuses[-1] == "STALLED", statuses
    assert [severity[x] for x in statuses] == sorted(severity[x] for x in statuses), statuses
    assert report["groups"][group]["members"] == 0
    ends = end_offsets(settings, settings.event_topics)
    for row in report["groups"][group]["partitions"]:
        assert row["log_end_offset"] == ends[(row["topic"], row["partition"])]
        assert row["lag"] == row["log_end_offset"] - (row["current_offset"] or 0)
        assert row["lag_seconds"] > 0 if row["lag"] else row["lag_seconds"] == 0

    worker = procs.worker(settings, log_level="warning")  # the worker starts again
    report = wait_drained(settings, worker)
    assert report["groups"][group]["status"] == "OK"
    for row in report["groups"][group]["partitions"]:
        assert row["lag"] == 0 and row["lag_seconds"] == 0 and row["status"] == "OK"
