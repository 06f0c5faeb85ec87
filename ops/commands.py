"""The subcommands that run the stages (worker, api, batch) and compose them (demo, bench, eval, lag,
dead-letters, rebuild), registered on the CLI by :mod:`ops.cli`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from streamrec.settings import Settings

Register = Callable[[argparse._SubParsersAction], None]


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole system locally and print where to look (Ctrl-C stops)",
                       description="Starts the local stack and every streamrec process with simulated "
                       "storefront traffic; prints the URLs; Ctrl-C stops everything it started.")
    p.add_argument("--rate", type=float, default=100.0, help="simulated events per second")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep-stack", action="store_true", help="leave Kafka and Redis running on exit")

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from ops.demo import run

        return run(settings, rate=args.rate, seed=args.seed, keep_stack=args.keep_stack)

    p.set_defaults(func=handler)


def _lag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lag", help="consumer lag per partition, in messages and seconds, with a status per group",
                       description="Like kafka-consumer-groups --describe: committed offset, log-end offset, lag "
                       "and the age of the oldest unprocessed event per partition, and a status per group "
                       "(OK, LAGGING, STALLED) evaluated over a window of observations as Burrow does. "
                       "--serve runs the Prometheus exporter (kafka_consumergroup_lag, ...). "
                       "See docs/operations.md.")
    from ops.lag_cli import add_arguments, run

    add_arguments(p)
    p.set_defaults(func=run)


def _dead_letters(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dead-letters", help="list the dead-letter topic, or replay chosen letters to their source",
                       description="`list` shows recent dead letters (reason, detail, source record, time, a "
                       "terminal-safe value preview); `replay` re-produces chosen ones to their source topic "
                       "after a fix (idempotent: the worker skips event ids it applied). See docs/operations.md.")
    from ops.dead_letters_cli import add_arguments, run

    add_arguments(p)
    p.set_defaults(func=run)


def _stages() -> list[Register]:
    from batch.cli import register as batch
    from online_api.cli import register as api
    from stream_processors.cli import register as worker

    return [worker, api, batch]


def _bench(sub: argparse._SubParsersAction) -> None:
    from ops.bench_cli import register

    register(sub)


def _eval(sub: argparse._SubParsersAction) -> None:
    from ops.eval_cli import register

    register(sub)


def _rebuild(sub: argparse._SubParsersAction) -> None:
    from ops.rebuild import register

    register(sub)


def _migrate(sub: argparse._SubParsersAction) -> None:
    from ops.migrate import register

    register(sub)


def _catalog(sub: argparse._SubParsersAction) -> None:
    from ops.catalog_cli import register

    register(sub)


REGISTRY: list[Register] = [_demo, _lag, _dead_letters, *_stages(), _bench, _eval, _rebuild, _migrate, _catalog]
