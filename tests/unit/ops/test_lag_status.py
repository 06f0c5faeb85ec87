"""The Burrow-style status rules of `streamrec lag` and how the observation window advances."""

from __future__ import annotations

import json
from pathlib import Path

from ops.lag import GroupLag, PartitionLag
from ops.lag_status import (
    LAGGING,
    OK,
    STALLED,
    FileHistory,
    Observation,
    Rules,
    advance,
    evaluate,
    partition_status,
)

RULES = Rules(window=5, stall_s=20.0)  # observations stored 5 s apart; a full window spans 20 s


def run(points: list[tuple[float, int, int]], rules: Rules = RULES) -> list[str]:
    """Feed (seconds, committed offset, lag) observations one by one; the status after each."""
    stored: list[Observation] = []
    out = []
    for t, off, lag in points:
        window, stored = advance(stored, Observation(int(t * 1000), off, lag), rules)
        out.append(partition_status(window, rules))
    return out


def test_zero_lag_anywhere_in_the_window_is_ok() -> None:
    assert run([(0, 10, 0)]) == [OK]
    # Caught up 5 s ago, now a backlog: still OK while the zero is in the window (Burrow's rule 1).
    assert run([(0, 10, 0), (5, 10, 40), (10, 10, 80)]) == [OK, OK, OK]


def test_a_backlog_that_never_shrinks_is_lagging() -> None:
    assert run([(0, 100, 50)]) == [LAGGING]
    assert run([(0, 100, 50), (5, 150, 60), (10, 200, 60), (15, 260, 90)]) == [LAGGING] * 4


def test_a_shrinking_backlog_is_ok() -> None:
    assert run([(0, 100, 50), (5, 180, 30), (10, 220, 40)]) == [LAGGING, OK, OK]


def test_unmoved_offsets_with_a_backlog_stall_once_the_window_spans_the_stall_time() -> None:
    statuses = run([(t, 100, 50 + t) for t in range(0, 30, 5)])
    assert statuses == [LAGGING, LAGGING, LAGGING, LAGGING, STALLED, STALLED]  # t=20: 20 s without a commit
    # A group that never committed (offset -1) while events wait is stalled the same way.
    assert run([(0, -1, 5), (25, -1, 9)]) == [LAGGING, STALLED]


def test_offsets_moving_again_leave_stalled() -> None:
    points = [(t, 100, 50) for t in range(0, 25, 5)] + [(25, 130, 40)]
    assert run(points)[-2:] == [STALLED, OK]


def test_observations_closer_than_the_spacing_are_evaluated_but_not_stored() -> None:
    stored: list[Observation] = []
    for t in (0, 1, 2, 3):
        window, stored = advance(stored, Observation(t * 1000, 100, 50), RULES)
        assert window[-1].ts_ms == t * 1000
    assert [o.ts_ms for o in stored] == [0]
    # So polling every second still builds a window that spans the stall time.
    statuses = run([(t, 100, 50) for t in range(0, 31)])
    assert statuses[:20] == [LAGGING] * 20 and statuses[20:] == [STALLED] * 11


def test_a_rewind_starts_a_new_window() -> None:
    stored = [Observation(t * 1000, 500, 10) for t in (0, 5, 10, 15)]
    window, kept = advance(stored, Observation(20_000, 100, 400), RULES)  # reset to replay
    assert window == kept == [Observation(20_000, 100, 400)]
    assert partition_status(window, RULES) == LAGGING


def test_old_observations_are_forgotten() -> None:
    stored = [Observation(0, 100, 50)]
    window, _ = advance(stored, Observation(int(RULES.max_age_ms) + 1, 100, 50), RULES)
    assert len(window) == 1


def test_group_status_is_the_worst_partition_and_windows_persist(tmp_path: Path) -> None:
    history = FileHistory(tmp_path / "state.json")

    def measure(t: int, offsets: tuple[int, int], lags: tuple[int, int]) -> GroupLag:
        parts = [PartitionLag("clicks", i, offsets[i], 0, offsets[i] + lags[i], lags[i], 1.0) for i in (0, 1)]
        return evaluate([GroupLag("g", "STABLE", 1, parts)], history, RULES, t * 1000)[0]

    g = measure(0, (100, 100), (0, 30))
    assert [p.status for p in g.partitions] == [OK, LAGGING] and g.status == LAGGING
    for t in (5, 10, 15):
        g = measure(t, (100, 100), (0, 30))
    g = measure(20, (100, 100), (0, 30))  # partition 1 unmoved for 20 s: the group is STALLED
    assert [p.status for p in g.partitions] == [OK, STALLED] and g.status == STALLED
    saved = json.loads((tmp_path / "state.json").read_text())
    assert len(json.loads(saved["g"]["clicks:1"])) == RULES.window


def test_a_damaged_state_file_costs_only_the_window(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    history = FileHistory(path)
    assert history.load("g") == {}
    parts = [PartitionLag("clicks", 0, 5, 0, 9, 4, 2.0)]
    assert evaluate([GroupLag("g", "EMPTY", 0, parts)], history, RULES, 0)[0].status == LAGGING
    assert "clicks:0" in json.loads(path.read_text())["g"]
