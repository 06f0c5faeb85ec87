"""The Faust app of ``streamrec worker``: a thin layer that batches records and hands them to the core.

One agent subscribes to the click and purchase topics together, so a batch holds both kinds and one
user's click and purchase land in the same transaction in order. Batches of up to ``worker_batch_size``
events, or whatever arrived within ``worker_batch_within_s``, are applied with
:meth:`stream_processors.processor.BatchProcessor.attempts`. By default (``worker_delivery=batch``) the
consumer hands whole fetches to the batch handler and acknowledges them per batch (:mod:`.faust_batch`);
with ``stream`` the agent's ``stream.take_events`` does, one Faust event per record. Faust's Kafka client
keeps fetching the next batch in its own thread meanwhile. Events are acknowledged (and their offsets
committed to Kafka) only after their batch is in Redis; the offsets stored in Redis make redelivery
harmless. Workers in one consumer group share the partitions; Faust assigns partition *p* of both
topics to the same worker (they are co-partitioned), so a user's events meet in one process.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import faust
import msgspec
import numpy as np

from stream_processors.dead_letters import DeadLetterProducer
from stream_processors.faust_fast import QuietMonitor, RawSchema, WorkerApp
from stream_processors.processor import BatchProcessor, tune_gc
from stream_processors.result import BatchResult
from streamrec.kafka_io import Record
from streamrec.settings import Settings

log = logging.getLogger("streamrec.worker")
PROGRESS_EVERY_S = 10.0


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs for a Kafka bootstrap list such as ``h1:9092,h2:9092``."""
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


class Progress:
    """Logs throughput, freshness and dead letters every ``PROGRESS_EVERY_S`` and writes per-batch stats."""

    def __init__(self, stats_file: Path | None) -> None:
        self.stats = stats_file.open("a", buffering=1) if stats_file else None
        self.since = time.monotonic()
        self.applied = self.batches = self.dead = 0
        self.fresh: list[np.ndarray] = []

    def batch(self, result: BatchResult) -> None:
        self.applied += result.applied
        self.batches += 1
        self.dead += sum(result.dead_letters.values())
        self.fresh.append(result.freshness_ms)
        if self.stats is not None:  # msgspec: a batch's per-event list costs json.dumps ~1 % of the worker
            line = result.as_dict()
            line["fresh"] = result.freshness_ms.tolist()
            self.stats.write(msgspec.json.encode(line).decode() + "\n")
        elapsed = time.monotonic() - self.since
        if elapsed >= PROGRESS_EVERY_S:
            fresh = np.concatenate(self.fresh) if self.fresh else np.zeros(0)
            p50, p99 = np.percentile(fresh, [50, 99]).tolist() if len(fresh) else (0.0, 0.0)
            log.info("applied %d events in %d batches (%.0f/s), freshness p50 %.0f ms p99 %.0f ms, "
                     "%d dead letters, model %s", self.applied, self.batches, self.applied / elapsed, p50, p99,
                     self.dead, result.version or "none yet")
            self.since = time.monotonic()
            self.applied = self.batches = self.dead = 0
            self.fresh = []


def build_app(settings: Settings, *, stats_file: Path | None = None) -> faust.App:
    """The Faust app with its agent; run it with :func:`run_worker`."""
    # Faust insists on a data directory; with in-memory tables it only creates empty folders in it, so
    # every worker on a machine can share one.
    datadir = Path(tempfile.gettempdir()) / "streamrec-worker"
    app = WorkerApp(
        settings.consumer_group,  # the app id is the Kafka consumer group
        broker=broker_urls(settings.kafka_bootstrap),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,  # metrics are served by prometheus-client (see metrics.py)
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        topic_disable_leader=True,
        topic_allow_declare=False,  # `ensure_topics` creates them with the project's partition count
        consumer_auto_offset_reset="earliest",
        datadir=str(datadir),
        store="memory://",
        autodiscover=False,
        # Room for many batches: a full buffer makes Faust pause and resume the partitions, and those
        # fetch restarts cost more throughput than anything else in the consumer (measured: 2-3x).
        stream_buffer_maxsize=max(16 * settings.worker_batch_size, 32_768),
        broker_max_poll_records=max(settings.worker_batch_size, 500),
        # A crashed worker's partitions move after this long (Faust's default is 60 s).
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.worker_session_timeout_s / 3),
        Monitor=QuietMonitor,
    )
    app.shutdown_grace_s = settings.worker_shutdown_grace_s
    processor = BatchProcessor(settings, dead_letters=DeadLetterProducer(settings).send)
    progress = Progress(stats_file)
    topics = app.topic(settings.topic_clicks, settings.topic_purchases, schema=RawSchema())

    async def apply_batch(records: list[Record]) -> bool:
        # The batch runs on the event loop's thread: handing it to a worker thread was measured slower
        # (Faust's threads and the batch then fight over the GIL; the fold-in ran 2x slower). Faust's
        # Kafka client keeps fetching and heartbeating in its own thread meanwhile. Retries wait with
        # asyncio.sleep, so the loop stays responsive while Redis or Kafka is away.
        result = await _apply(app, processor, records)
        if result is None:
            log.info("stopping: abandoned a batch of %d records that was being retried (nothing of it "
                     "was written; it is redelivered)", len(records))
            return False
        progress.batch(result)
        return True

    batches = settings.worker_delivery == "batch"
    if batches:  # the consumer hands whole batches to apply_batch (faust_batch.py); the agent only subscribes
        app.batch_handler = apply_batch
        app.batch_max_records, app.batch_within_s = settings.worker_batch_size, settings.worker_batch_within_s

    @app.agent(topics, name="streamrec.apply_events")
    async def apply_events(stream: Any) -> None:
        async for events in stream.take_events(settings.worker_batch_size, within=settings.worker_batch_within_s):
            if batches or not await apply_batch([_record(e.message) for e in events]):
                return

    @app.timer(interval=2.0)
    async def follow_model() -> None:
        # Load a newly published version between batches, so the next batch need not wait for it.
        try:
            processor.refresh_model()
        except Exception as exc:  # Redis away: the next batch retries with backoff anyway
            log.warning("model check failed: %s", exc)
        # Redis Cluster: shared effects a crashed or failed drain left in an outbox (no-op on one Redis)
        try:
            processor.drain_outboxes()
        except Exception as exc:
            log.warning("outbox sweep failed: %s", exc)

    async def finish_drains(sender: Any, **_: Any) -> None:
        # Redis Cluster: apply the outbox entries of the last batches now rather than leave them to the next
        # owner's sweep (nothing is lost either way; a quarter of the grace period at most).
        await asyncio.get_running_loop().run_in_executor(None, processor.close, settings.worker_shutdown_grace_s / 4)

    app.on_before_shutdown.connect(cast(Any, finish_drains))

    return app


async def _apply(app: WorkerApp, processor: BatchProcessor, records: list[Record]) -> BatchResult | None:
    """Drive :meth:`BatchProcessor.attempts`, sleeping between retries; None if the worker stops meanwhile."""
    attempts = processor.attempts(records)
    while True:
        try:
            wait = next(attempts)
        except StopIteration as done:
            return done.value
        deadline = time.monotonic() + wait
        while True:  # sleep in short slices: a stop must not wait for a 5 s backoff
            if app.stopping:
                attempts.close()
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(left, 0.1))


def _record(message: Any) -> Record:
    ts = message.timestamp
    return Record(message.topic, message.partition, message.offset, message.key, message.value,
                  int(ts * 1000) if ts is not None else 0)


def run_worker(settings: Settings, *, loglevel: str = "info", stats_file: Path | None = None) -> int:
    """Run the worker until SIGTERM/SIGINT (Faust's worker handles both and stops gracefully)."""
    from faust.worker import Worker

    try:
        import uvloop

        uvloop.install()  # roughly a third less event-loop overhead per message than asyncio's loop
    except ImportError:
        pass
    # One BLAS thread: the fold-in's matrices are small, and extra threads only contend with Faust's.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    app = build_app(settings, stats_file=stats_file)
    tune_gc()
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
