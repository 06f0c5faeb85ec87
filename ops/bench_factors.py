"""Item and user factors from a real fit, resampled to any catalogue size, for ``streamrec bench api --sizes``.

An index is only measured fairly on factors with the structure of real ones (clusters, a skewed norm
distribution, users aligned with popular directions); on independent Gaussian noise no index works as it
does on real data. So the factors come from implicit ALS fitted on the Globo clicks in ``../shared/datasets``
(25,649 articles, 235,733 users), or, when that file is absent (a fresh clone), on simulated storefront
traffic (:mod:`streamrec.simulate`); the JSON says which. A fit is cached under ``<stack_dir>/bench`` as
``.npy`` files (plain arrays, no pickle). :func:`resample` then reaches a size: each new row is a real
row plus Gaussian noise scaled to that row's length, so the catalogue keeps the real directions, clusters
and the real (very skewed) distribution of lengths: in the Globo fit the median article's factor row is
about 1/500 of the 99th percentile's, and noise of one scale for every row would turn the many short rows
into long random ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.eventlog import EventLog
from streamrec.settings import Settings

F32 = npt.NDArray[np.float32]
NOISE = 0.5  # length of the noise added to a resampled row, as a share of the row's length (cosine ≈ 0.9)
SIM_EVENTS = 400_000


@dataclass(frozen=True)
class FittedFactors:
    """The item and user factors of one fit, and where they come from."""

    items: F32
    users: F32
    source: str


def _say(msg: str) -> None:
    print(f"[bench api] {msg}", file=sys.stderr, flush=True)


def _fit(settings: Settings, factors: int) -> FittedFactors:
    from models.eventlog import interaction_matrix
    from models.training import ALSParams, train_als
    from streamrec.datasets import DatasetUnavailable, load_globo

    params = ALSParams(factors=factors, regularization=settings.als_regularization, alpha=settings.als_alpha,
                       iterations=settings.als_iterations)
    try:
        data = load_globo(weighting=settings.weighting())
        log, source = data.log, f"implicit ALS fit on the Globo G1 clicks ({len(data.log):,} events)"
    except DatasetUnavailable:
        log, source = _simulated_log(settings), f"implicit ALS fit on {SIM_EVENTS:,} simulated events"
    _say(f"fitting {factors} factors: {source}")
    matrix = interaction_matrix(log, 0, len(log))
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)
    items = np.flatnonzero(np.bincount(matrix.indices, minlength=log.n_items) > 0)
    fit = train_als(matrix[users][:, items], params)
    return FittedFactors(fit.item_factors, fit.user_factors, source)


def _simulated_log(settings: Settings) -> EventLog:
    """An event log of simulated storefront traffic (the fallback when the real dataset is absent)."""
    import itertools

    from streamrec.datasets import to_log
    from streamrec.simulate import SimConfig, Storefront, sim_clock

    shop = Storefront(SimConfig(seed=11, users=30_000, items=20_000, categories=16))
    events = list(itertools.islice(shop.events(sim_clock(1_700_000_000_000, 1_000.0)), SIM_EVENTS))
    return to_log(np.array([e.ts for e in events]), np.array([e.user_id for e in events]),
                  np.array([e.item_id for e in events]), np.array([str(e.type) for e in events]),
                  settings.weighting())


def fitted_factors(settings: Settings, factors: int = 64) -> FittedFactors:
    """A real fit's factors, from the cache when an earlier run left them."""
    cache = Path(settings.stack_dir) / "bench"
    paths = [cache / f"fit-{factors}-{part}.npy" for part in ("items", "users")]
    source_path = cache / f"fit-{factors}-source.txt"
    if all(p.is_file() for p in paths) and source_path.is_file():
        items, users = (np.load(p, allow_pickle=False) for p in paths)
        return FittedFactors(items, users, source_path.read_text().strip() + " (cached)")
    fit = _fit(settings, factors)
    cache.mkdir(parents=True, exist_ok=True)
    for p, arr in zip(paths, (fit.items, fit.users), strict=True):
        np.save(p, arr, allow_pickle=False)
    source_path.write_text(fit.source)
    return fit


def resample(rows: F32, n: int, seed: int = 0, noise: float = NOISE) -> F32:
    """``n`` rows: the real ones first (while they last), then real rows drawn at random plus noise of
    ``noise`` times their own length."""
    rng = np.random.default_rng(seed)
    take = min(n, len(rows))
    out = np.empty((n, rows.shape[1]), dtype=np.float32)
    out[:take] = rows[:take]
    if n > take:
        f = rows.shape[1]
        length = np.linalg.norm(rows, axis=1).astype(np.float32)
        picks = rng.integers(0, len(rows), n - take)
        for start in range(take, n, 200_000):  # in blocks: no n × f float64 temporary
            stop = min(start + 200_000, n)
            src = picks[start - take : stop - take]
            scale = (noise / np.sqrt(f) * length[src])[:, None]
            out[start:stop] = rows[src] + rng.standard_normal((stop - start, f), dtype=np.float32) * scale
    return out
