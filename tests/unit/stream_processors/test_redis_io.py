"""Pure helpers of the Redis side: the dedup window arithmetic, the batch histogram."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from stream_processors.metrics import BatchHistogram
from stream_processors.redis_io import dedup_buckets


def test_an_id_added_at_t_is_checked_until_t_plus_window() -> None:
    window = 3_600
    for t in range(0, 3 * window, 97):
        bucket, _, expire_at = dedup_buckets(t, window)
        assert expire_at >= t + window
        for later in range(t, t + window + 1, 101):
            assert bucket in dedup_buckets(later, window)[1]


def test_buckets_are_few() -> None:
    assert len(dedup_buckets(10_000, 60)[1]) == 3


def test_batch_histogram_bins_like_prometheus() -> None:
    registry = CollectorRegistry()
    h = BatchHistogram("t_seconds", "test", (1.0, 0.1), registry=registry)
    h.observe_many(np.array([0.1, 0.5, 1.0, 7.0]))
    h.observe_many(np.array([]))
    text = generate_latest(registry).decode()
    assert 't_seconds_bucket{le="0.1"} 1.0' in text and 't_seconds_bucket{le="1.0"} 3.0' in text
    assert 't_seconds_bucket{le="+Inf"} 4.0' in text and "t_seconds_count 4.0" in text and "t_seconds_sum 8.6" in text
