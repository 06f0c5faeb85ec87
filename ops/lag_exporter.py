"""`streamrec lag --serve`: consumer lag as Prometheus metrics, named as kafka-exporter and KMinion name them.

A loop measures the groups every ``interval`` seconds (and advances their status windows, shared with
the ``streamrec lag`` command through Redis); each scrape serves the latest measurement, so a scrape
never waits on Kafka and partitions that disappear stop being exported.

Series (labels ``consumergroup``, ``topic``, ``partition`` as kafka-exporter has them):

- ``kafka_consumergroup_lag`` — log-end offset minus committed offset, in messages;
- ``kafka_consumergroup_lag_seconds`` — age of the oldest unprocessed message (0 without lag);
- ``kafka_consumergroup_current_offset`` — the group's committed offset;
- ``kafka_consumergroup_lag_sum`` — lag summed over a topic's partitions;
- ``kafka_consumergroup_members`` — members of the group;
- ``kafka_consumergroup_status`` / ``kafka_consumergroup_partition_status`` — 0 OK, 1 LAGGING, 2 STALLED;
- ``kafka_topic_partition_current_offset`` / ``kafka_topic_partition_oldest_offset`` — log end / start;
- ``streamrec_lag_exporter_up`` (1 when the last measurement succeeded), ``..._last_success_timestamp_seconds``,
  ``..._poll_seconds`` and ``..._poll_errors_total``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ops.lag import GroupLag, LagError, measure
from ops.lag_status import SEVERITY, Rules, evaluate, open_history
from streamrec.kafka_io import KafkaUnavailable, admin_client
from streamrec.settings import Settings

PART = ["consumergroup", "topic", "partition"]


class LagCollector(Collector):
    """Serves the latest measurement; :meth:`update` and :meth:`failed` are called by the poll loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.groups: list[GroupLag] = []
        self.up = 0
        self.last_success = 0.0
        self.poll_seconds = 0.0
        self.errors = 0

    def update(self, groups: list[GroupLag], seconds: float) -> None:
        with self._lock:
            self.groups, self.up, self.last_success, self.poll_seconds = groups, 1, time.time(), seconds

    def failed(self, seconds: float) -> None:
        with self._lock:
            self.up, self.poll_seconds, self.errors = 0, seconds, self.errors + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            groups, up, last, took, errors = self.groups, self.up, self.last_success, self.poll_seconds, self.errors
        lag = GaugeMetricFamily("kafka_consumergroup_lag", "Log-end offset minus the group's committed offset",
                                labels=PART)
        secs = GaugeMetricFamily("kafka_consumergroup_lag_seconds",
                                 "Age of the oldest message the group has not processed (0 without lag)", labels=PART)
        cur = GaugeMetricFamily("kafka_consumergroup_current_offset", "The group's committed offset", labels=PART)
        pstat = GaugeMetricFamily("kafka_consumergroup_partition_status",
                                  "Partition status: 0 OK, 1 LAGGING, 2 STALLED", labels=PART)
        lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum", "Lag summed over the topic's partitions",
                                    labels=["consumergroup", "topic"])
        members = GaugeMetricFamily("kafka_consumergroup_members", "Members of the consumer group",
                                    labels=["consumergroup"])
        status = GaugeMetricFamily("kafka_consumergroup_status", "Group status: 0 OK, 1 LAGGING, 2 STALLED",
                                   labels=["consumergroup"])
        end = GaugeMetricFamily("kafka_topic_partition_current_offset", "Log-end offset (high watermark)",
                                labels=["topic", "partition"])
        start = GaugeMetricFamily("kafka_topic_partition_oldest_offset", "Log-start offset",
                                  labels=["topic", "partition"])
        seen: set[tuple[str, int]] = set()
        for g in groups:
            sums: dict[str, int] = {}
            for p in g.partitions:
                labels = [g.group, p.topic, str(p.partition)]
                lag.add_metric(labels, p.lag)
                if p.lag_seconds is not None:
                    secs.add_metric(labels, p.lag_seconds)
                if p.current_offset is not None:
                    cur.add_metric(labels, p.current_offset)
                pstat.add_metric(labels, SEVERITY[p.status])
                sums[p.topic] = sums.get(p.topic, 0) + p.lag
                if (p.topic, p.partition) not in seen:
                    seen.add((p.topic, p.partition))
                    end.add_metric([p.topic, str(p.partition)], p.log_end_offset)
                    start.add_metric([p.topic, str(p.partition)], p.log_start_offset)
            for topic, total in sums.items():
                lag_sum.add_metric([g.group, topic], total)
            members.add_metric([g.group], g.members)
            status.add_metric([g.group], SEVERITY[g.status])
        yield from (lag, secs, cur, pstat, lag_sum, members, status, end, start)
        yield GaugeMetricFamily("streamrec_lag_exporter_up", "1 when the last lag measurement succeeded", value=up)
        yield GaugeMetricFamily("streamrec_lag_exporter_last_success_timestamp_seconds",
                                "When the last lag measurement succeeded", value=last)
        yield GaugeMetricFamily("streamrec_lag_exporter_poll_seconds", "Duration of the last measurement",
                                value=took)
        yield CounterMetricFamily("streamrec_lag_exporter_poll_errors", "Measurements that failed", value=errors)


def summary(groups: Sequence[GroupLag]) -> str:
    """One progress line: each group's status, total lag and oldest unprocessed age."""
    return "; ".join(f"{g.group} {g.status} lag={g.total_lag} oldest={g.max_lag_seconds:.1f}s" for g in groups)


def serve(
    settings: Settings,
    groups: Sequence[str],
    topics: Sequence[str] | None,
    *,
    port: int,
    interval: float,
    stop: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Serve the metrics on ``settings.metrics_host:port`` until ``stop`` is set (or SIGTERM / Ctrl-C)."""
    say = say or (lambda line: print(f"[lag-exporter] {line}", file=sys.stderr, flush=True))
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    collector = LagCollector()
    registry.register(collector)
    server, _thread = start_http_server(port, addr=settings.metrics_host, registry=registry)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say(f"serving http://{settings.metrics_host}:{port}/metrics for groups {', '.join(groups)}; "
        f"measuring every {interval:g} s")
    admin, history, rules = admin_client(settings), open_history(settings), Rules.from_settings(settings)
    last_statuses: list[str] = []
    last_said = 0.0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                measured = measure(settings, groups, topics, admin=admin, timeout=min(5.0, interval))
                evaluate(measured, history, rules, int(time.time() * 1000))
                collector.update(measured, time.monotonic() - t0)
                # Progress without flooding the log: on every change of status, else once a minute.
                statuses = [g.status for g in measured]
                if statuses != last_statuses or t0 - last_said > 60:
                    say(summary(measured))
                    last_statuses, last_said = statuses, t0
            except (KafkaUnavailable, LagError, KafkaException) as exc:
                collector.failed(time.monotonic() - t0)
                say(f"measurement failed: {exc}")
            stop.wait(max(0.0, interval - (time.monotonic() - t0)))
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        say("stopped")
    return 0
