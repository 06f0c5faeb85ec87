"""The sizes benchmark's factors: real rows first, then real rows plus noise (the real structure kept)."""

from __future__ import annotations

import numpy as np

from ops.bench_factors import resample


def test_resample_keeps_the_real_rows_and_draws_noisy_copies_of_them() -> None:
    rng = np.random.default_rng(0)
    real = (rng.standard_normal((50, 8)) * rng.lognormal(0, 0.5, (50, 1))).astype(np.float32)
    out = resample(real, 400, seed=1)
    assert out.shape == (400, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:50], real)
    # every new row is nearest to some real row, at a distance of the noise (not an independent draw)
    dist = np.linalg.norm(out[50:, None, :] - real[None, :, :], axis=2).min(axis=1)
    assert np.median(dist) < 0.5 * np.median(np.linalg.norm(real[:, None] - real[None], axis=2))
    np.testing.assert_array_equal(resample(real, 20), real[:20])
