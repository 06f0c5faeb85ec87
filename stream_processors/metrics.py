"""Prometheus metrics of the streaming worker (``streamrec_worker_*``), served on ``/metrics``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from stream_processors.columns import Batch
    from stream_processors.result import BatchResult

log = logging.getLogger("streamrec.worker")

EVENTS = Counter("streamrec_worker_events_total", "events applied (history, counts, trending, vectors)",
                 ["topic", "type"])
SKIPPED = Counter("streamrec_worker_skipped_total",
                  "events not applied: redelivered (at or below the applied offset) or duplicate event_id",
                  ["reason"])
DEAD_LETTERS = Counter("streamrec_worker_dead_letters_total", "invalid events sent to the dead-letter topic",
                       ["reason"])
BATCH_SIZE = Histogram("streamrec_worker_batch_size", "records per batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000))
BATCH_SECONDS = Histogram("streamrec_worker_batch_seconds", "time to process one batch, retries included",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
FOLDIN_SECONDS = Histogram("streamrec_worker_foldin_seconds", "batched fold-in time per batch",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))


class BatchHistogram(Collector):
    """A Prometheus histogram observed a whole numpy array at a time.

    ``Histogram.observe`` costs about a microsecond per value under its lock; freshness is observed
    for every event, thousands per batch, so this one bins a batch with one ``searchsorted``.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        bins = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        with self._lock:
            self.counts += bins
            self.total += float(np.sum(values))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self.counts).tolist()
            total = self.total
        buckets = [(repr(float(b)), c) for b, c in zip(self.bounds.tolist(), cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


FRESHNESS = BatchHistogram("streamrec_worker_freshness_seconds",
                           "event time to the batch's Redis write, per applied event",
                           (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60))
USERS_FOLDED = Counter("streamrec_worker_users_folded_total", "user vectors written")
NEW_ITEMS = Counter("streamrec_worker_new_items_folded_total", "items folded in after the refit")
APPLIED_OFFSET = Gauge("streamrec_worker_applied_offset", "last offset applied in Redis", ["topic", "partition"])
RETRIES = Counter("streamrec_worker_retries_total",
                  "batch attempts repeated: conflict (WATCH), model (version swapped), infrastructure, bug",
                  ["kind"])
MODEL_INFO = Gauge("streamrec_worker_model_info", "the model version folded against (value 1)", ["version"])
UNREPLICATED = Counter("streamrec_worker_unreplicated_total", "Redis Cluster transactions that no replica "
                       "acknowledged within STREAMREC_REDIS_WAIT_MS (a failover then could lose them)")
MODEL_SWAPS = Counter("streamrec_worker_model_loads_total", "model versions loaded")


def serve(host: str, port: int) -> int:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; returns the bound port (``port`` 0: any)."""
    server, _ = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def observe_result(result: BatchResult) -> None:
    """The metrics of one processed batch (:meth:`.processor.BatchProcessor.attempts`)."""
    BATCH_SIZE.observe(result.records)
    BATCH_SECONDS.observe(result.batch_s)
    if result.vectors:
        FOLDIN_SECONDS.observe(result.foldin_s)
    for reason, n in result.dead_letters.items():
        DEAD_LETTERS.labels(reason).inc(n)
    if result.redelivered:
        SKIPPED.labels("redelivered").inc(result.redelivered)
    if result.duplicates:
        SKIPPED.labels("duplicate").inc(result.duplicates)
    USERS_FOLDED.inc(result.vectors)
    NEW_ITEMS.inc(result.new_items)
    FRESHNESS.observe_many(result.freshness_ms / 1000.0)


def observe_types(applied: dict[tuple[str, str], int]) -> None:
    """Events applied, by (topic, type)."""
    for (topic, etype), n in applied.items():
        EVENTS.labels(topic, etype).inc(n)


def observe_batch(batch: Batch) -> None:
    """Metrics of one committed batch (a part of one, while isolating a poison event)."""
    observe_types(batch.applied_by_type)
    for (topic, partition), offset in batch.max_offsets.items():
        APPLIED_OFFSET.labels(topic, str(partition)).set(offset)
