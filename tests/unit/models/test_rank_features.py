"""The learned ranker's history and item features: what each column means, on a hand-made history and
against a plain per-candidate computation on random ones."""

from __future__ import annotations

import numpy as np
import pytest

from models.rank_features import (
    DECAY_DAYS,
    HISTORY_FEATURES,
    candidate_item_stats,
    history_features,
    item_stats,
    log_item_stats,
)

DAY = 86_400_000


def col(name: str) -> int:
    return HISTORY_FEATURES.index(name)


def test_a_hand_made_history() -> None:
    # trips on day 0 (items 1, 2), day 10 (item 1), day 20 (items 1, 3); asked on day 25
    items = np.array([1, 2, 1, 1, 3])
    ts = np.array([0, 0, 10, 20, 20]) * DAY
    f = history_features(np.array([1, 2, 3, 4]), items, ts, 25 * DAY)
    np.testing.assert_array_equal(f[:, col("count")], [3, 1, 1, 0])
    np.testing.assert_allclose(f[:, col("trip_share")], [1, 1 / 3, 1 / 3, 0])
    np.testing.assert_allclose(f[:3, col("days_since_last")], [5, 25, 5])
    assert np.isnan(f[3, col("days_since_last")])
    assert f[0, col("gap_days")] == 10 and f[0, col("overdue")] == 0.5
    assert np.isnan(f[1:, col("gap_days")]).all()  # one trip: no gap
    np.testing.assert_array_equal(f[:3, col("trips_since_last")], [0, 2, 0])
    np.testing.assert_array_equal(f[:, col("in_last_trip")], [1, 0, 1, 0])
    assert f[0, col("decayed_7d")] == pytest.approx(2 ** (-25 / 7) + 2 ** (-15 / 7) + 2 ** (-5 / 7))
    assert f[:, col("decayed_relative")].max() == 1.0
    # user columns: same on every row
    np.testing.assert_allclose(f[:, col("user_trips"):], [[3, 3, 5, 10]] * 4)


def test_no_history_gives_zero_counts_and_unknown_times() -> None:
    f = history_features(np.array([0, 5]), np.zeros(0), np.zeros(0), DAY)
    assert (f[:, col("count")] == 0).all() and np.isnan(f[:, col("days_since_last")]).all()
    assert (f[:, col("user_trips")] == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_plain_computation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    ts = np.sort(rng.choice(40, n)) * DAY // 2
    items = rng.integers(0, 12, n)
    now = int(ts[-1]) + int(rng.integers(0, 5 * DAY))
    cand = np.unique(rng.integers(0, 15, 10))
    f = history_features(cand, items, ts, now)
    trips = sorted(set(ts.tolist()))
    for r, c in enumerate(cand.tolist()):
        mine = ts[items == c]
        assert f[r, col("count")] == len(mine)
        mine_trips = sorted(set(mine.tolist()))
        assert f[r, col("trips")] == len(mine_trips)
        if not len(mine):
            continue
        assert f[r, col("days_since_last")] == pytest.approx((now - mine.max()) / DAY)
        assert f[r, col("trips_since_last")] == sum(t > mine.max() for t in trips)
        for d in DECAY_DAYS:
            want = sum(2 ** (-(now - t) / DAY / d) for t in mine.tolist())
            assert f[r, col(f"decayed_{d:g}d")] == pytest.approx(want)
        if len(mine_trips) > 1:
            gap = (mine_trips[-1] - mine_trips[0]) / DAY / (len(mine_trips) - 1)
            assert f[r, col("gap_days")] == pytest.approx(gap)


def test_item_stats_repeat_rate_and_unknown_items() -> None:
    # (user, item, events): u0 bought item 0 three times, u1 once; u0 bought item 1 once; item 2 never
    stats = item_stats(np.array([0, 0, 1]), np.array([3, 1, 1]), 3)
    np.testing.assert_allclose(stats[0], [np.log1p(4), 1.1 / 3])
    np.testing.assert_allclose(stats[1], [np.log1p(1), 0.1 / 2])
    assert np.isnan(stats[2]).all()
    np.testing.assert_allclose(log_item_stats(np.array([0, 0, 1, 0, 0]), np.array([0, 0, 0, 1, 0]), 2, 3), stats,
                               equal_nan=True)
    rows = candidate_item_stats(np.array([1, 7]), stats)  # 7: beyond the stats (a new item)
    np.testing.assert_allclose(rows[0], stats[1])
    assert np.isnan(rows[1]).all()
