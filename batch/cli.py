"""`streamrec batch run|rollback|status` and `streamrec bench refit`."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
import time
from typing import Any

from streamrec.settings import Settings

log = logging.getLogger("streamrec.batch")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``1.5h`` (or bare seconds) to seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: use a positive number with s, m or h (e.g. 1h)")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1.0)


def _progress(msg: str) -> None:
    print(f"[batch] {msg}", file=sys.stderr, flush=True)


def _err(msg: str) -> None:
    print(f"streamrec: {msg}", file=sys.stderr, flush=True)


class _Metrics:
    """Prometheus metrics of the scheduled batch job."""

    def __init__(self, settings: Settings) -> None:
        from prometheus_client import Counter, Gauge, Info, start_http_server

        self.last_success = Gauge("streamrec_batch_last_success_timestamp_seconds", "end of the last successful run")
        self.last_failure = Gauge("streamrec_batch_last_failure_timestamp_seconds", "end of the last failed run")
        self.duration = Gauge("streamrec_batch_duration_seconds", "wall time of the last run")
        self.fit = Gauge("streamrec_batch_fit_seconds", "implicit fit time of the last successful run")
        self.interactions = Gauge("streamrec_batch_interactions", "user-item interactions in the last model")
        self.events = Gauge("streamrec_batch_events_read", "events read by the last run")
        self.runs = Counter("streamrec_batch_runs", "batch runs by result", ["result"])
        self.version = Info("streamrec_batch_model_version", "model version published by the last successful run")
        start_http_server(settings.batch_metrics_port, addr=settings.metrics_host)

    def success(self, summary: dict[str, Any]) -> None:
        self.last_success.set(time.time())
        self.duration.set(summary.get("total_s", 0.0))
        self.fit.set(summary.get("fit_s", 0.0))
        self.interactions.set(summary.get("n_interactions", 0))
        self.events.set(summary.get("read", 0))
        self.runs.labels("success").inc()
        self.version.info({"version": str(summary["version"]), "n_users": str(summary.get("n_users")),
                           "n_items": str(summary.get("n_items"))})

    def failure(self, seconds: float) -> None:
        self.last_failure.set(time.time())
        self.duration.set(seconds)
        self.runs.labels("failure").inc()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from batch.refit import RefitError, run_refit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.every is None:
        try:
            summary = run_refit(settings, rebuild=args.rebuild, progress=_progress)
        except RefitError as exc:
            _err(f"{exc} (the current model keeps serving)")
            return 1
        print(json.dumps(summary), flush=True)
        return 0

    metrics = _Metrics(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _progress(f"running every {args.every:g}s; metrics on http://{settings.metrics_host}:{settings.batch_metrics_port}"
              "/metrics (Ctrl-C stops)")
    rebuild = args.rebuild
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                summary = run_refit(settings, rebuild=rebuild, progress=_progress)
                rebuild = False
                metrics.success(summary)
                print(json.dumps(summary), flush=True)
            except RefitError as exc:  # logged and recorded by run_refit; wait for the next tick
                metrics.failure(time.monotonic() - started)
                _err(f"{exc} (the current model keeps serving; next attempt in {args.every:g}s)")
            stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    return 0


def _redis_down(action: str, settings: Settings, exc: Exception) -> int:
    """One line saying Redis did not answer (as ``streamrec rebuild`` says it), and the exit code."""
    from streamrec.store import redacted_url

    _err(f"batch {action}: redis at {redacted_url(settings.redis_url)} does not answer ({exc})")
    return 1


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from batch.admin import NoPreviousVersion, rollback
    from streamrec.kafka_io import KafkaUnavailable

    try:
        result = rollback(settings)
    except NoPreviousVersion as exc:
        _err(str(exc))
        return 1
    except redis.RedisError as exc:
        return _redis_down("rollback", settings, exc)
    except KafkaUnavailable as exc:  # while reading which users to re-fold, after the switch
        _err(f"batch rollback: kafka does not answer ({exc}); the previous version may be current already "
             "without its recent users re-folded: check `streamrec batch status`")
        return 1
    print(f"rolled back from {result['rolled_back_from']} to {result['current']}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from batch.admin import status

    try:
        info = status(settings)
    except redis.RedisError as exc:
        return _redis_down("status", settings, exc)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"current version: {info['current'] or '(none published yet)'}")
    if info["meta"]:
        print(json.dumps(info["meta"], indent=2))
    print("versions (oldest first):")
    for v in info["versions"]:
        mark = "*" if v["version"] == info["current"] else " "
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["activated_at"]))
        print(f" {mark} {v['version']}  activated {when} UTC{'' if v['present'] else '  (removed)'}")
    if info["last_run"]:
        print(f"last run: {json.dumps(info['last_run'])[:400]}")
    if info["snapshot"]:
        s = info["snapshot"]
        print(f"snapshot: {s['events']:,} events, {s['n_entries']:,} user-item pairs in {s['dir']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this stage's subcommands to the CLI."""
    p = sub.add_parser("batch", help="refit the model from the event topics and publish it (run, rollback, status)",
                       description="The batch refit: reads the new events from Kafka into a local snapshot, fits "
                       "implicit ALS, publishes a model version to Redis atomically. See docs/batch.md.")
    bsub = p.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    r = bsub.add_parser("run", help="run the refit once (or on a schedule with --every)")
    r.add_argument("--every", type=parse_interval, metavar="INTERVAL",
                   help="run on a schedule, e.g. 30m or 1h (s, m, h); a failed run waits for the next one")
    r.add_argument("--rebuild", action="store_true",
                   help="discard the local snapshot and read the topics from the beginning")
    r.set_defaults(func=cmd_run)
    rb = bsub.add_parser("rollback", help="make the previous model version current again")
    rb.set_defaults(func=cmd_rollback)
    st = bsub.add_parser("status", help="current version and its metadata, versions, last run, snapshot")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

