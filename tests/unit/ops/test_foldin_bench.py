"""`streamrec bench foldin --json`: the benchmark runs end to end and its JSON line is usable.

Timings are not asserted (they belong to the benchmark's printed figures); the accuracy it checks
against implicit is.
"""

from __future__ import annotations

import json

import pytest

from ops.cli import main


def test_bench_foldin_json_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "foldin", "--json", "--users", "40", "--items", "2000", "--factors", "16"])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["users"] == 40 and result["factors"] == 16
    assert result["max_abs_diff"] <= 1e-4
    for key in ("speedup_vs_implicit", "speedup_vs_implicit_1thread", "batched_us_per_user", "solver_build_ms"):
        assert result[key] > 0
    assert "[bench foldin]" in captured.err  # progress goes to stderr, not into the JSON stream
