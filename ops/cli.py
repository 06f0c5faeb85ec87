"""The ``streamrec`` command line: one subcommand per process and task."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence

from ops import commands
from streamrec.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _err(msg: str) -> None:
    print(f"streamrec: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ stack
def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.localstack import LocalStack, StackError, main_progress

    stack = LocalStack(settings, progress=main_progress)
    try:
        if args.action == "up":
            stack.up(redis_cluster=args.redis_cluster)
        elif args.action == "down":
            stack.down()
            return 0
    except StackError as exc:
        _err(str(exc))
        return 1
    statuses = stack.status(redis_cluster=args.redis_cluster)
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses]))
    else:
        for st in statuses:
            pid = st.pid if st.pid is not None else "-"
            print(f"{st.name:<6} {'healthy' if st.healthy else 'DOWN':<8} pid={pid:<8} {st.detail}")
    return 0 if all(s.healthy for s in statuses) else 1


# ------------------------------------------------------------------------------------------ simulate
def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec import simulate
    from streamrec.events import now_ms
    from streamrec.kafka_io import EventProducer, KafkaUnavailable, ensure_topics

    if args.count is None and args.duration is None:
        _err("give --count or --duration")
        return 2
    try:
        ensure_topics(settings)
    except KafkaUnavailable as exc:
        _err(f"{exc} (is the stack up? run: streamrec stack up)")
        return 1
    cfg = simulate.SimConfig(seed=args.seed, users=args.users, items=args.items, categories=args.categories)
    store = simulate.Storefront(cfg)
    clock = None
    if args.history_hours:
        # Back-dated history: spread the events evenly over the last N hours, as fast as Kafka takes them.
        n = args.count or int(args.duration * args.rate)
        start = now_ms() - int(args.history_hours * 3_600_000)
        clock = simulate.sim_clock(start, n / (args.history_hours * 3600))
    producer = EventProducer(settings)
    catalog_store = None
    if args.catalog:
        from streamrec.store import RedisStore

        catalog_store = RedisStore(settings)

    def write_catalog() -> None:
        if catalog_store is not None:
            from streamrec.store.catalog import put_items

            put_items(catalog_store, store.catalog())

    def report(stats: simulate.SimStats) -> None:
        write_catalog()  # new items appear over time: keep the catalogue current
        print(f"[simulate] {json.dumps(stats.as_dict())}", file=sys.stderr, flush=True)

    print(f"[simulate] producing to {settings.kafka_bootstrap} topics {settings.event_topics} "
          f"at {args.rate:g} events/s (seed {args.seed})", file=sys.stderr, flush=True)
    write_catalog()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: flush what was sent
    stats = simulate.SimStats()
    with contextlib.suppress(KeyboardInterrupt):
        stats = simulate.run(producer.send, rate=0 if args.history_hours else args.rate, count=args.count,
                             duration_s=args.duration, store=store, clock=clock, progress=report)
    left = producer.flush(60)
    if left:
        _err(f"{left} events were not delivered")
        return 1
    write_catalog()
    print(json.dumps(stats.as_dict()))
    return 0


# ------------------------------------------------------------------------------------------ schema
def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from streamrec.events import schema_text

    text = schema_text()
    if args.write:
        from streamrec.settings import REPO_ROOT

        (REPO_ROOT / "docs" / "event.schema.json").write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# ------------------------------------------------------------------------------------------ config
def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from ops import config_doc

    if args.write:
        config_doc.write()
    elif args.effective:
        values = json.loads(settings.model_dump_json())
        for secret in ("api_keys", "api_ingest_keys", "storefront_ingest_key"):
            if values.get(secret):
                values[secret] = "***"  # secrets never reach a terminal or a log
        from streamrec.store import redacted_url

        values["redis_url"] = redacted_url(values["redis_url"])  # it may carry Redis's password
        print(json.dumps(values, indent=2))
    else:
        sys.stdout.write(config_doc.render())
    return 0


# ------------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="Real-time streaming recommender: implicit ALS with exact fold-in on Kafka and Redis. "
        "Settings come from STREAMREC_* environment variables (see docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stack", help="start, stop or check the local Kafka and Redis (no Docker needed)",
                       description="Run real Apache Kafka (KRaft) and Redis on loopback, data under .stack/.")
    p.add_argument("action", choices=["up", "down", "status"],
                   help="up: start both (idempotent) and create topics; down: stop both; status: health")
    p.add_argument("--json", action="store_true", help="print status as JSON")
    p.add_argument("--redis-cluster", action="store_true",
                   help="up: also start a local Redis Cluster (3 masters, 1 replica each, ports from "
                   "STREAMREC_REDIS_CLUSTER_PORT, default 17000-17005); status: list it even when stopped "
                   "(down always stops it)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("simulate", help="produce realistic storefront click and purchase events to Kafka",
                       description="Seeded storefront traffic: user tastes over categories, Zipf item "
                       "popularity, rare purchases after clicks, new users and items over time.")
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--users", type=int, default=2_000, help="users at the start")
    p.add_argument("--items", type=int, default=1_000, help="items at the start")
    p.add_argument("--categories", type=int, default=10)
    p.add_argument("--history-hours", type=float, default=0.0,
                   help="back-date the events over the last N hours and send them as fast as possible")
    p.add_argument("--catalog", action="store_true", help="also write the item catalogue to Redis")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("schema", help="print the event JSON Schema (docs/event.schema.json)")
    p.add_argument("--write", action="store_true", help="write it to docs/event.schema.json")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("config", help="list every setting (STREAMREC_* variables) or show the effective values",
                       description="Settings come from STREAMREC_* environment variables; this lists them.")
    p.add_argument("--write", action="store_true", help="write docs/configuration.md")
    p.add_argument("--effective", action="store_true", help="print the values this environment gives, as JSON")
    p.set_defaults(func=cmd_config)

    for register in commands.REGISTRY:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrec`` console script."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
