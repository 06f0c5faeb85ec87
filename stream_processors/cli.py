"""`streamrec worker` and `streamrec bench stream`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from streamrec.settings import Settings
from streamrec.store.layout import LayoutMismatch


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from stream_processors import metrics
    from stream_processors.app import run_worker
    from streamrec.kafka_io import KafkaUnavailable, ensure_topics
    from streamrec.store import redacted_url  # the URL may carry Redis's password: never log it

    if args.metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": args.metrics_port})
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    try:
        ensure_topics(settings)
    except KafkaUnavailable as exc:
        print(f"streamrec: {exc} (is the stack up? run: streamrec stack up)", file=sys.stderr, flush=True)
        return 1
    try:
        check_partitions(settings)
    except LayoutMismatch as exc:
        print(f"streamrec: {exc}", file=sys.stderr, flush=True)
        return 1
    port = metrics.serve(settings.metrics_host, settings.worker_metrics_port)
    print(f"[worker] group {settings.consumer_group} on {settings.kafka_bootstrap} topics "
          f"{settings.event_topics} -> redis {redacted_url(settings.redis_url)} prefix {settings.redis_prefix!r}; "
          f"metrics on http://{settings.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
    return run_worker(settings, loglevel=args.log_level, stats_file=args.stats_file)


def check_partitions(settings: Settings) -> None:
    """The event topics have ``STREAMREC_PARTITIONS`` partitions each (a user's clicks and purchases then
    share a partition number, and the Redis keys of the user's state follow that count), and Redis holds
    state in this layout (recorded now on an empty Redis); raises :class:`LayoutMismatch` otherwise."""
    import redis

    from streamrec.kafka_io import admin_client
    from streamrec.store import RedisStore
    from streamrec.store.layout import ensure_layout

    topics = admin_client(settings).list_topics(timeout=10).topics
    counts = {t: len(topics[t].partitions) for t in settings.event_topics if t in topics}
    wrong = {t: n for t, n in counts.items() if n != settings.partitions}
    if wrong:
        raise LayoutMismatch(f"the event topics have {wrong} partitions but STREAMREC_PARTITIONS is "
                             f"{settings.partitions}: the Redis keys follow the partition count, so give every "
                             "event topic the same count and set STREAMREC_PARTITIONS to it")
    store = RedisStore(settings)
    try:
        ensure_layout(store)
    except redis.RedisError as exc:  # the batches retry until Redis is back; the next start checks then
        logging.getLogger("streamrec.worker").warning("redis did not answer (%s): key layout not checked", exc)
    finally:
        store.close()


def register(sub: argparse._SubParsersAction) -> None:
    """Add this stage's subcommands to the CLI."""
    p = sub.add_parser(
        "worker", help="run the streaming worker: fold every click and purchase into the user's factors",
        description="Consumes the click and purchase topics as one Faust consumer group, validates every "
        "event (invalid ones go to the dead-letter topic with the reason), and applies each batch to Redis "
        "in one MULTI/EXEC exactly once: interaction history, event counts, the user's vector folded in "
        "against the current model version, trending counts, new items, applied offsets. Run several to "
        "share the partitions. Settings: STREAMREC_* (worker_batch_size, worker_batch_within_s, "
        "history_cap, ...); see docs/streaming.md.")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="port of the Prometheus /metrics endpoint (default: STREAMREC_WORKER_METRICS_PORT; "
                   "0 picks a free one)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--stats-file", type=Path, default=None,
                   help="append one JSON line per batch (sizes, timings, per-event freshness) to this file")
    p.set_defaults(func=cmd_worker)

