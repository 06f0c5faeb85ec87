"""Repeat profile and session, hand-checked."""

from __future__ import annotations

import pytest

from models.profile import repeat_profile, session


def test_repeat_profile_sums_decayed_weights_per_item() -> None:
    items, scores = repeat_profile([5, 3, 5], [0, 3_600_000, 7_200_000], [1.0, 2.0, 1.0], 7_200_000, 3_600.0)
    assert items.tolist() == [3, 5]
    assert scores.tolist() == pytest.approx([2.0 * 0.5, 1.0 * 0.25 + 1.0])
    _, plain = repeat_profile([5, 3, 5], [0, 1, 2], [1.0, 2.0, 1.0], 2, None)
    assert plain.tolist() == [2.0, 2.0]


def test_session_is_the_newest_distinct_items_with_decaying_weights() -> None:
    s = session([1, 2, 1, 3, 3], [0, 1_000, 2_000, 3_000, 4_000], 10_000, 3, 0.5)
    assert s.items.tolist() == [3, 1, 2]
    assert s.weights.tolist() == [1.0, 0.5, 0.25]
    assert s.idle_s == 6.0
    assert session([], [], 0, 3, 0.5).items.tolist() == []
