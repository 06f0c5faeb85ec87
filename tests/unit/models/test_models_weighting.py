"""Event weights, time decay and the weighted user×item matrix."""

from __future__ import annotations

import numpy as np
import pytest

from models.weighting import (
    WeightingConfig,
    build_user_items,
    decay_factors,
    event_weight,
    event_weights,
    weighted_matrix,
)

HOUR_MS = 3_600_000
NOW = 1_800_000_000_000


def test_type_weights_without_decay() -> None:
    cfg = WeightingConfig({"click": 1.5, "purchase": 4.0})
    assert event_weight("click", NOW - 10 * HOUR_MS, NOW, cfg) == 1.5
    assert event_weight("purchase", 0, NOW, cfg) == 4.0
    np.testing.assert_array_equal(event_weights(["click", "purchase", "click"], [0, 1, 2], None, cfg), [1.5, 4.0, 1.5])
    assert event_weight("view", NOW, NOW, cfg) == 0.5  # types not named keep the registry's default
    np.testing.assert_array_equal(event_weights(["add_to_cart", "view"], [0, 0], None, cfg), [3.0, 0.5])
    np.testing.assert_array_equal(cfg.by_code, [0.5, 1.5, 3.0, 4.0])
    with pytest.raises(ValueError, match="unknown event type"):
        event_weight("like", NOW, NOW, cfg)
    with pytest.raises(ValueError, match="unknown event type"):
        event_weights(["click", "like"], [0, 0], None, cfg)
    with pytest.raises(ValueError, match="unknown event type"):
        WeightingConfig({"like": 1.0})


def test_decay_halves_every_half_life() -> None:
    cfg = WeightingConfig(half_life_s=3600.0)
    assert event_weight("click", NOW, NOW, cfg) == pytest.approx(1.0)
    assert event_weight("click", NOW - HOUR_MS, NOW, cfg) == pytest.approx(0.5)
    assert event_weight("purchase", NOW - 3 * HOUR_MS, NOW, cfg) == pytest.approx(5.0 / 8)
    # 90 minutes: 0.5 ** 1.5, computed independently
    assert event_weight("click", NOW - 90 * 60_000, NOW, cfg) == pytest.approx(2**-1.5)
    # an event "from the future" (producer clock skew) is not boosted
    assert event_weight("click", NOW + HOUR_MS, NOW, cfg) == pytest.approx(1.0)


def test_vectorised_matches_scalar_and_default_reference_is_newest() -> None:
    cfg = WeightingConfig(half_life_s=1800.0)
    types = np.array(["click", "purchase", "purchase", "click"])
    ts = np.array([NOW, NOW - HOUR_MS, NOW - 7 * HOUR_MS, NOW - 123_456])
    vec = event_weights(types, ts, NOW, cfg)
    scalar = [event_weight(t, int(s), NOW, cfg) for t, s in zip(types, ts, strict=True)]
    np.testing.assert_allclose(vec, scalar, rtol=1e-12)
    np.testing.assert_allclose(event_weights(types, ts, None, cfg), vec, rtol=1e-12)
    np.testing.assert_array_equal(decay_factors(ts, NOW, None), np.ones(4))


def test_matrix_sums_duplicates_and_drops_zeros() -> None:
    m = weighted_matrix([0, 0, 1, 0, 2], [3, 3, 1, 0, 2], [1.0, 5.0, 2.0, 0.5, 0.0], shape=(3, 4))
    assert m.dtype == np.float32 and m.shape == (3, 4) and m.has_canonical_format
    np.testing.assert_array_equal(m.toarray(), [[0.5, 0, 0, 6.0], [0, 2.0, 0, 0], [0, 0, 0, 0]])
    assert m.nnz == 3  # the explicit 0.0 weight is not stored
    assert weighted_matrix([1], [2], [1.0]).shape == (2, 3)


def test_build_user_items_end_to_end() -> None:
    cfg = WeightingConfig({"click": 1.0, "purchase": 5.0}, half_life_s=3600.0)
    users = [0, 0, 0, 1]
    items = [2, 2, 1, 2]
    types = ["click", "purchase", "click", "click"]
    ts = [NOW, NOW - HOUR_MS, NOW - 2 * HOUR_MS, NOW]
    m = build_user_items(users, items, types, ts, cfg, ref_ms=NOW, shape=(2, 3))
    # user 0, item 2: a fresh click (1) plus an hour-old purchase (5 * 0.5)
    assert m[0, 2] == pytest.approx(3.5)
    assert m[0, 1] == pytest.approx(0.25)
    assert m[1, 2] == pytest.approx(1.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        WeightingConfig(half_life_s=0.0)
    with pytest.raises(ValueError):
        WeightingConfig({"click": -1.0})
    with pytest.raises(ValueError):
        weighted_matrix([0, 1], [0], [1.0, 1.0])
    with pytest.raises(ValueError):
        weighted_matrix([-1], [0], [1.0])
