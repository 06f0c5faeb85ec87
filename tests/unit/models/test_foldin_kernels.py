"""The fold-in kernels' bucket planner: every short-history length is solved in exactly one bucket."""

from __future__ import annotations

import numpy as np

from models.foldin_kernels import plan_buckets


def test_bucket_plan_covers_every_length_once() -> None:
    counts = [0, 5, 3, 40, 0, 9, 1, 0, 2, 0, 0, 7] + [0] * 20 + [1]
    starts = [0, *np.cumsum(counts).tolist()]
    plan = plan_buckets(starts, 3, 32)
    covered = [length for first, last in plan for length in range(first, last + 1) if counts[length]]
    assert covered == [length for length in range(3, 33) if counts[length]]
    assert all(counts[last] for _, last in plan)  # padded to a length that occurs
    assert plan_buckets(starts, 13, 31) == []
