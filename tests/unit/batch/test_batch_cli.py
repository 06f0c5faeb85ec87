"""The batch CLI: schedule intervals, the commands it registers, and what it says when Redis is down."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from batch.cli import parse_interval
from ops import bench_cli
from ops.cli import build_parser


def test_interval_units() -> None:
    assert [parse_interval(t) for t in ("90", "90s", "15m", "1h", "1.5h")] == [90, 90, 900, 3600, 5400]
    for bad in ("", "0s", "-1h", "1d", "h"):
        with pytest.raises(argparse.ArgumentTypeError, match="invalid interval"):
            parse_interval(bad)


def test_batch_and_bench_commands_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["batch", "run", "--every", "30m"]).every == 1800
    assert parser.parse_args(["batch", "run", "--rebuild"]).rebuild
    assert parser.parse_args(["batch", "rollback"]).func.__name__ == "cmd_rollback"
    assert parser.parse_args(["batch", "status", "--json"]).json
    args = parser.parse_args(["bench", "refit", "--json", "--dataset", "x.csv.gz"])
    assert args.json and args.dataset == "x.csv.gz" and args.func is bench_cli.cmd_refit
    assert (args.repeat, args.new_days, args.no_cold) == (3, 1.0, False)
    args = parser.parse_args(["bench", "refit", "--repeat", "5", "--new-days", "0.5", "--no-cold"])
    assert (args.repeat, args.new_days, args.no_cold) == (5, 0.5, True)


@pytest.mark.parametrize("action", [["status"], ["status", "--json"], ["rollback"]])
def test_redis_down_is_one_line_and_a_failure(action: list[str]) -> None:
    env = {**os.environ, "STREAMREC_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0",  # nothing listens on port 1
           "STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "ops.cli", "batch", *action], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"streamrec: batch {action[0]}: redis at redis://:***@127.0.0.1:1/0 does not answer")
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
