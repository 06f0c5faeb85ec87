"""Subcommands of the later stages (demo, worker, api, batch, bench, eval, lag), registered on the CLI."""

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
        from streamrec.demo import run

        return run(settings, rate=args.rate, seed=args.seed, keep_stack=args.keep_stack)

    p.set_defaults(func=handler)


def _stages() -> list[Register]:
    from batch.cli import register as batch
    from online_api.cli import register as api
    from stream_processors.cli import register as worker

    return [worker, api, batch]


REGISTRY: list[Register] = [_demo, *_stages()]
