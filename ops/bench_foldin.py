"""Benchmark: batched exact fold-in (``models.foldin``) versus implicit's ``recalculate_user``.

Synthetic but realistic setup: item factors come from a short implicit ALS fit on a matrix with
Zipf item popularity; the users to fold in have Zipf-distributed history lengths on [1, 200]
(P(L) ∝ L^-2, the frequency form of Zipf's law: median 1, mean ≈ 3.6, ~2% above 32), click
weight 1 / purchase weight 5. Each new user is timed the way a stream processor would call implicit
-- one ``recalculate_user`` call per user, over a random sample of the batch -- against one
``FoldInSolver.fold_in`` call for the whole batch; figures are per-user means (median over repeats).

The solver is built once per model version (it inverts ``YtY + reg*I`` and projects every item),
as a stream processor does when a version is published; that one-off cost is reported separately
as ``solver_build_ms``. ``fold_in_users_us_per_user`` times the one-off convenience
``fold_in_users``, which builds a lazy solver per call.

implicit is timed twice, interleaved with the batched solver: as ``AlternatingLeastSquares()``
builds it (``num_threads=0``: OpenMP on every core; ``speedup_vs_implicit``, the baseline the
issue quotes), and tuned to one thread, its fastest setting for one user per call
(``speedup_vs_implicit_1thread``). The batched solver runs single-threaded.

Run: ``streamrec bench foldin [--json]`` or ``python -m ops.bench_foldin``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.foldin import FoldInSolver, fold_in_users
from models.training import ALSParams, to_implicit, train_als
from models.weighting import WeightingConfig, build_user_items

HISTORY_ZIPF_EXPONENT = 2.0
MAX_HISTORY = 200
TRAIN_USERS = 10_000
IMPLICIT_SAMPLE = 200
REPEATS = 15  # medians; the machine may be shared, so more than a few
BUILD_REPEATS = 3
PURCHASE_SHARE = 0.1


def _zipf_lengths(rng: np.random.Generator, n: int, low: int, high: int, exponent: float) -> npt.NDArray[np.int64]:
    """History lengths drawn from P(L) ∝ L^-exponent on [low, high]."""
    support = np.arange(low, high + 1)
    p = support.astype(np.float64) ** -exponent
    return rng.choice(support, size=n, p=p / p.sum()).astype(np.int64)


def _interactions(
    rng: np.random.Generator, lengths: npt.NDArray[np.int64], popularity_cdf: npt.NDArray[np.float64]
) -> sp.csr_matrix:
    """Weighted user×item matrix: items by popularity, repeats summed (so rows may be shorter)."""
    users = np.repeat(np.arange(len(lengths)), lengths)
    items = np.searchsorted(popularity_cdf, rng.random(len(users)), side="right")
    items = np.minimum(items, len(popularity_cdf) - 1)
    types = np.where(rng.random(len(users)) < PURCHASE_SHARE, "purchase", "click")
    ts = np.zeros(len(users), dtype=np.int64)
    return build_user_items(users, items, types, ts, WeightingConfig(), shape=(len(lengths), len(popularity_cdf)))


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    users: int = 1000,
    items: int = 50_000,
    factors: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return speedup, accuracy and per-user timings (µs)."""
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (np.arange(items) + 10.0)  # Zipf-like item popularity
    cdf = np.cumsum(rng.permutation(popularity))
    cdf /= cdf[-1]

    say(f"fitting implicit ALS on {TRAIN_USERS} synthetic users × {items} items ({factors} factors)")
    train = _interactions(rng, _zipf_lengths(rng, TRAIN_USERS, 5, MAX_HISTORY, 1.5), cdf)
    params = ALSParams(factors=factors, iterations=3, random_state=seed)
    model = train_als(train, params)
    reference = to_implicit(model)
    default_threads = reference.num_threads  # what AlternatingLeastSquares() gives a user: 0 = all cores
    reference.YtY  # noqa: B018  -- implicit caches YtY on first use; keep that out of the timing

    batch = _interactions(rng, _zipf_lengths(rng, users, 1, MAX_HISTORY, HISTORY_ZIPF_EXPONENT), cdf)
    lengths = np.diff(batch.indptr)
    sample = np.sort(rng.choice(users, size=min(IMPLICIT_SAMPLE, users), replace=False))
    rows = [batch[int(u)] for u in sample]

    def one_at_a_time() -> list[npt.NDArray[np.float32]]:
        return [reference.recalculate_user(0, row) for row in rows]

    def with_threads(n: int) -> Callable[[], object]:
        def call() -> object:
            # One row per call gains nothing from OpenMP; one thread is implicit's best case here.
            reference.num_threads = n
            return one_at_a_time()

        return call

    def build() -> FoldInSolver:
        return FoldInSolver(model.item_factors, model.gram, params.regularization, params.alpha)

    def convenience() -> npt.NDArray[np.float32]:
        return fold_in_users(model.item_factors, model.gram, batch, params.regularization, params.alpha)

    with threadpool_limits(limits=1, user_api="blas"):
        build_s = float(np.median([_seconds(build) for _ in range(BUILD_REPEATS)]))
        solver = build()  # once per model version, as a stream processor does
        singles = np.vstack(one_at_a_time())  # warm-up, and the per-call results to compare
        folded = solver.fold_in(batch)
        conv_folded = convenience()
        say(
            f"solver built in {build_s * 1e3:.1f} ms; timing {REPEATS}x: implicit recalculate_user on "
            f"{len(rows)} users one call each, FoldInSolver.fold_in on {users} users in one call"
        )
        # interleave them so a noisy neighbour on the machine slows all alike
        default_runs, single_runs, batched_runs, conv_runs = [], [], [], []
        for _ in range(REPEATS):
            default_runs.append(_seconds(with_threads(default_threads)) / len(rows))
            single_runs.append(_seconds(with_threads(1)) / len(rows))
            batched_runs.append(_seconds(lambda: solver.fold_in(batch)) / users)
            conv_runs.append(_seconds(convenience) / users)
        implicit_s, batched_s = float(np.median(default_runs)), float(np.median(batched_runs))
        single_s, conv_s = float(np.median(single_runs)), float(np.median(conv_runs))
        implicit_batch_s = _seconds(lambda: reference.recalculate_user(np.arange(users), batch)) / users

    expected = reference.recalculate_user(np.arange(users), batch)
    max_diff = max(
        float(np.abs(folded - expected).max()),
        float(np.abs(folded[sample] - singles).max()),
        float(np.abs(conv_folded - expected).max()),
    )
    return {
        "users": users,
        "speedup_vs_implicit": round(implicit_s / batched_s, 2),
        "max_abs_diff": max_diff,
        "speedup_vs_implicit_1thread": round(single_s / batched_s, 2),
        "implicit_us_per_user": round(implicit_s * 1e6, 2),
        "implicit_1thread_us_per_user": round(single_s * 1e6, 2),
        "batched_us_per_user": round(batched_s * 1e6, 2),
        "solver_build_ms": round(build_s * 1e3, 2),
        "fold_in_users_us_per_user": round(conv_s * 1e6, 2),
        "implicit_batch_call_us_per_user": round(implicit_batch_s * 1e6, 2),
        "items": items,
        "factors": factors,
        "history_len_mean": round(float(lengths.mean()), 2),
        "history_len_max": int(lengths.max(initial=0)),
        "history_zipf_exponent": HISTORY_ZIPF_EXPONENT,
        "implicit_sample_users": len(rows),
    }


def main(json_out: bool = False, users: int = 1000, items: int = 50_000, factors: int = 64, seed: int = 0) -> int:
    """Run the benchmark: progress on stderr, figures on stdout (one JSON line last with ``json_out``)."""
    result = run(users=users, items=items, factors=factors, seed=seed,
                 progress=lambda msg: print(f"[bench foldin] {msg}", file=sys.stderr, flush=True))
    if json_out:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key:<34} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(json_out=True))
