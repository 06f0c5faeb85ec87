"""The batch CLI: schedule intervals and the commands it registers."""

from __future__ import annotations

import argparse

import pytest

from batch.cli import parse_interval
from streamrec.cli import _load_plugins, build_parser


def test_interval_units() -> None:
    assert [parse_interval(t) for t in ("90", "90s", "15m", "1h", "1.5h")] == [90, 90, 900, 3600, 5400]
    for bad in ("", "0s", "-1h", "1d", "h"):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid interval"):
            parse_interval(bad)


def test_batch_and_bench_commands_parse() -> None:
    _load_plugins()
    parser = build_parser()
    assert parser.parse_args(["batch", "run", "--every", "30m"]).every == 1800
    assert parser.parse_args(["batch", "run", "--rebuild"]).rebuild
    assert parser.parse_args(["batch", "rollback"]).func.__name__ == "cmd_rollback"
    assert parser.parse_args(["batch", "status", "--json"]).json
    args = parser.parse_args(["bench", "refit", "--json", "--dataset", "x.csv.gz"])
    assert args.json and args.dataset == "x.csv.gz" and args.func.__name__ == "cmd_bench_refit"
    assert (args.repeat, args.new_days, args.no_cold) == (3, 1.0, False)
    args = parser.parse_args(["bench", "refit", "--repeat", "5", "--new-days", "0.5", "--no-cold"])
    assert (args.repeat, args.new_days, args.no_cold) == (5, 0.5, True)
