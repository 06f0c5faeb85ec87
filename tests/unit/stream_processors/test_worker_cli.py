"""`streamrec worker` and `streamrec bench stream` parse and explain themselves."""

from __future__ import annotations

from ops import bench_cli
from ops.cli import build_parser


def test_worker_and_bench_stream_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["worker", "--metrics-port", "0", "--log-level", "warning"])
    assert args.metrics_port == 0 and args.func.__name__ == "cmd_worker"
    args = parser.parse_args(["bench", "stream", "--json", "--events", "1000", "--rate", "500"])
    assert args.json and args.events == 1000 and args.rate == 500 and args.func is bench_cli.cmd_stream
    help_text = parser._subparsers._group_actions[0].choices["worker"].format_help()  # type: ignore[union-attr]
    assert "dead-letter" in help_text and "MULTI/EXEC" in help_text
