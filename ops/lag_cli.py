"""`streamrec lag`: the consumer-lag table (like ``kafka-consumer-groups --describe``), its JSON, and the exporter."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import KafkaException

from ops.lag import GroupLag, LagError, measure
from ops.lag_status import Rules, evaluate, open_history
from streamrec.kafka_io import KafkaUnavailable
from streamrec.settings import Settings

COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS", "STATUS")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", action="extend", nargs="+", metavar="GROUP",
                   help="consumer group(s) to describe (default: the worker's, STREAMREC_CONSUMER_GROUP); repeatable")
    p.add_argument("--topics", action="extend", nargs="+", metavar="TOPIC",
                   help="only these topics, listing every partition even where the group never committed "
                   "(default: the topics the group committed to, plus the event topics for the worker's group)")
    p.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until Ctrl-C")
    p.add_argument("--json", action="store_true",
                   help="print JSON: {\"groups\": {GROUP: {\"status\", \"partitions\": [...]}}} (one line per refresh)")
    p.add_argument("--serve", action="store_true",
                   help="run the Prometheus exporter (kafka_consumergroup_lag, ..._lag_seconds, ...) instead")
    p.add_argument("--port", type=int, help="exporter port (default STREAMREC_LAG_EXPORTER_PORT)")
    p.add_argument("--interval", type=float, default=10.0, help="exporter: seconds between measurements")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each Kafka answer")


def _fmt_secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render_table(groups: Sequence[GroupLag], out: TextIO) -> None:
    """The table, then one status line per group."""
    rows = [COLUMNS]
    for g in groups:
        for p in g.partitions:
            rows.append((g.group, p.topic, str(p.partition), "-" if p.current_offset is None else str(p.current_offset),
                         str(p.log_end_offset), str(p.lag), _fmt_secs(p.lag_seconds), p.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write("\n")
    for g in groups:
        note = "" if g.partitions else "  (no committed offsets: pass --topics to see its backlog)"
        out.write(f"{g.group}: {g.status}  state={g.state} members={g.members} total-lag={g.total_lag} "
                  f"oldest-unprocessed={g.max_lag_seconds:.1f}s{note}\n")


def as_json(groups: Sequence[GroupLag], now_ms: int) -> dict[str, Any]:
    """The report as one JSON object: ``{"time", "groups": {group: {status, ..., partitions: [...]}}}``."""
    return {"time": datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds"),
            "groups": {g.group: g.as_dict() for g in groups}}


def report(settings: Settings, groups: Sequence[str], topics: Sequence[str] | None,
           timeout: float = 5.0) -> list[GroupLag]:
    """Measure the groups and evaluate their status (advancing the shared window)."""
    measured = measure(settings, groups, topics, timeout=timeout)
    return evaluate(measured, open_history(settings), Rules.from_settings(settings), int(time.time() * 1000))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The ``lag`` subcommand."""
    groups: list[str] = list(dict.fromkeys(args.group or [settings.consumer_group]))
    topics: list[str] | None = list(dict.fromkeys(args.topics)) if args.topics else None
    if args.serve:
        from ops.lag_exporter import serve

        return serve(settings, groups, topics, port=args.port or settings.lag_exporter_port,
                     interval=args.interval)
    while True:
        try:
            measured = report(settings, groups, topics, args.timeout)
        except (KafkaUnavailable, KafkaException) as exc:
            print(f"streamrec: kafka at {settings.kafka_bootstrap} did not answer: {exc} "
                  "(is the stack up? run: streamrec stack up)", file=sys.stderr, flush=True)
            if args.watch is None:
                return 1
        except LagError as exc:
            print(f"streamrec: {exc}", file=sys.stderr, flush=True)
            return 1
        else:
            if args.json:
                print(json.dumps(as_json(measured, int(time.time() * 1000))), flush=True)
            else:
                if args.watch is not None and sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between refreshes
                if args.watch is not None:
                    print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z} — every {args.watch:g} s, Ctrl-C stops")
                render_table(measured, sys.stdout)
                sys.stdout.flush()
        if args.watch is None:
            return 0
        time.sleep(max(0.1, args.watch))
