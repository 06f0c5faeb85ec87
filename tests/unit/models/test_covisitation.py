"""Co-visitation pairs: hand-checked weights, the vectorised log equals the per-event worker path, decayed units."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from models.covisitation import (
    CovisConfig,
    CovisTable,
    aggregate_pairs,
    decay_units,
    decayed_value,
    event_pairs,
    log_pairs,
    rebase,
)

CFG = CovisConfig(window_s=100, max_prev=3, distance_decay=0.5, purchase_factor=4, backward_weight=0.25,
                  half_life_s=50, top_n=3)


def test_event_pairs_weights_by_distance_type_and_direction() -> None:
    # previous items oldest first: 7 (too old), 1, 2, 3 (newest); the new event is a purchase of 9 at t=150 s
    a, b, w = event_pairs([7, 1, 2, 3], [0, 60_000, 100_000, 140_000], 9, 150_000, True, CFG, epoch_ms=150_000)
    forward = {(int(x), int(y)): float(v) for x, y, v in zip(a, b, w, strict=True) if y == 9}
    backward = {(int(x), int(y)): float(v) for x, y, v in zip(a, b, w, strict=True) if x == 9}
    # d=1 → item 3 (0.5^0 · 4), d=2 → item 2 (0.5 · 4), d=3 → item 1 (0.25 · 4); item 7 is beyond max_prev
    assert forward == pytest.approx({(3, 9): 4.0, (2, 9): 2.0, (1, 9): 1.0})
    assert backward == pytest.approx({(9, 3): 1.0, (9, 2): 0.5, (9, 1): 0.25})


def test_event_pairs_respect_the_window_the_session_and_skip_self_pairs() -> None:
    a, _, _ = event_pairs([1, 2], [0, 10_000], 5, 105_000, False, CFG, 0)
    assert a.tolist()[:1] == [2]  # item 1 is 105 s old: outside the 100 s window
    a, _, _ = event_pairs([1, 5], [90_000, 95_000], 5, 100_000, False, CFG, 0)
    assert sorted(a.tolist()) == [1, 5]  # 5→5 skipped; 1→5 and its reverse 5→1 remain
    a, _, _ = event_pairs([1, 2], [90_000, 95_000], 5, 100_000, False, CFG, 0, prev_sessions=[8, 9], session=9)
    assert sorted(a.tolist()) == [2, 5]


def test_log_pairs_equal_the_per_event_pairs_of_every_event() -> None:
    rng = np.random.default_rng(3)
    n = 400
    ts = np.sort(rng.integers(0, 2_000_000, n)).astype(np.int64)
    user, item = rng.integers(0, 12, n), rng.integers(0, 15, n)
    purchase, session = rng.random(n) < 0.3, rng.integers(0, 3, n)
    j, a, b, w = log_pairs(ts, user, item, purchase, session, CFG, 0, 100, n)
    assert np.all(np.diff(j) >= 0) and j.min() >= 100
    expected: dict[tuple[int, int], float] = defaultdict(float)
    for e in range(100, n):
        prev = np.flatnonzero(user[:e] == user[e])
        pa, pb, pw = event_pairs(item[prev], ts[prev], int(item[e]), int(ts[e]), bool(purchase[e]), CFG, 0,
                                 session[prev], int(session[e]))
        for x, y, v in zip(pa.tolist(), pb.tolist(), pw.tolist(), strict=True):
            expected[(x, y)] += v
    ga, gb, gw = aggregate_pairs(a, b, w)
    got = {(int(x), int(y)): float(v) for x, y, v in zip(ga, gb, gw, strict=True)}
    assert got.keys() == expected.keys() and len(got) > 20
    assert all(got[key] == pytest.approx(val) for key, val in expected.items())


def test_decayed_units_add_up_and_rebase_without_changing_the_true_value() -> None:
    ts = np.array([0, 25_000, 100_000])
    stored = (np.array([1.0, 2.0, 3.0]) * decay_units(ts, 0, 50)).sum()
    now = 150_000
    direct = 1.0 * 0.5 ** 3 + 2.0 * 0.5 ** 2.5 + 3.0 * 0.5 ** 1
    assert float(decayed_value(stored, now, 0, 50)) == pytest.approx(direct)
    moved = rebase(stored, 0, 120_000, 50)
    assert float(decayed_value(moved, now, 120_000, 50)) == pytest.approx(direct)


def test_table_keeps_the_top_n_neighbours_and_adds_increments() -> None:
    a = np.array([0, 0, 0, 0, 1])
    b = np.array([1, 2, 3, 4, 0])
    table = CovisTable.from_pairs(5, CFG, 0, a, b, np.array([1.0, 4.0, 3.0, 2.0, 1.0]))
    idx, val = table.neighbours(0)
    assert idx.tolist() == [2, 3, 4] and val.tolist() == [4.0, 3.0, 2.0]  # top_n = 3: item 1 trimmed
    table.add(np.array([0, 0]), np.array([4, 4]), np.array([1.5, 1.5]))
    assert table.neighbours(0)[0].tolist() == [4, 2, 3]
    assert table.neighbours(1)[0].tolist() == [0]
