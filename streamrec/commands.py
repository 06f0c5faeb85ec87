"""Subcommands of the later stages (demo, worker, api, batch, bench, eval, lag, dead-letters), registered on the CLI."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from streamrec.settings import Settings

Register = Callable[[argparse._SubParsersAction], None]


def bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The shared ``streamrec bench`` group (created on first use): add ``bench <name>`` parsers to it."""
    parser = sub.choices.get("bench")
    if parser is None:
        parser = sub.add_parser("bench", help="benchmarks that print figures (foldin, refit, stream, api)",
                                description="Each benchmark prints progress, then its figures; with --json "
                                "the last line is one JSON object.")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="bench", required=True, metavar="BENCH")


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole system locally and print where to look (Ctrl-C stops)",
                       description="Starts the local stack and every streamrec process with simulated "
                       "storefront traffic; prints the URLs; Ctrl-C stops everything it started.")
    p.add_argument("--rate", type=float, default=100.0, help="simulated events per second")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep-stack", action="store_true", help="leave Kafka and Redis running on exit")

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from streamrec.demo import run

        return run(settings, rate=args.rate, seed=args.seed, keep_stack=args.keep_stack)

    p.set_defaults(func=handler)


def _lag(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lag", help="consumer lag per partition, in messages and seconds, with a status per group",
                       description="Like kafka-consumer-groups --describe: committed offset, log-end offset, lag "
                       "and the age of the oldest unprocessed event per partition, and a status per group "
                       "(OK, LAGGING, STALLED) evaluated over a window of observations as Burrow does. "
                       "--serve runs the Prometheus exporter (kafka_consumergroup_lag, ...). "
                       "See docs/operations.md.")
    from streamrec.lag_cli import add_arguments, run

    add_arguments(p)
    p.set_defaults(func=run)


def _dead_letters(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dead-letters", help="list the dead-letter topic, or replay chosen letters to their source",
                       description="`list` shows recent dead letters (reason, detail, source record, time, a "
                       "terminal-safe value preview); `replay` re-produces chosen ones to their source topic "
                       "after a fix (idempotent: the worker skips event ids it applied). See docs/operations.md.")
    from streamrec.dead_letters_cli import add_arguments, run

    add_arguments(p)
    p.set_defaults(func=run)


def _bench_foldin(sub: argparse._SubParsersAction) -> None:
    p = bench_subparsers(sub).add_parser(
        "foldin", help="batched exact fold-in (FoldInSolver) versus implicit's recalculate_user",
        description="Fits a small implicit model on synthetic Zipf data, then times FoldInSolver.fold_in on "
        "a batch of new users against recalculate_user one user per call, and checks they agree.")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    p.add_argument("--users", type=int, default=1000, help="users folded in per batch")
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from streamrec.bench_foldin import main

        return main(json_out=args.json, users=args.users, items=args.items, factors=args.factors, seed=args.seed)

    p.set_defaults(func=handler)


def _stages() -> list[Register]:
    from batch.cli import register as batch
    from online_api.cli import register as api
    from stream_processors.cli import register as worker

    return [worker, api, batch]


def _eval(sub: argparse._SubParsersAction) -> None:
    from streamrec.eval_cli import register

    register(sub)


def _rebuild(sub: argparse._SubParsersAction) -> None:
    from streamrec.rebuild import register

    register(sub)


REGISTRY: list[Register] = [_demo, _lag, _dead_letters, *_stages(), _bench_foldin, _eval, _rebuild]
