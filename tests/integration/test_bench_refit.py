"""`streamrec bench refit` end to end on a small synthetic click file: both timings, honest fields, no leftovers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ops.bench_refit import run
from streamrec.kafka_io import admin_client
from streamrec.settings import Settings
from streamrec.store import RedisStore

DAY_MS = 86_400_000


def test_bench_refit_times_steady_state_and_cold_runs_and_cleans_up(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    n = 6_000
    ts = np.sort(rng.integers(1_700_000_000_000, 1_700_000_000_000 + 3 * DAY_MS, n))
    df = pd.DataFrame({"ts_ms": ts, "user_id": [f"u{k}" for k in rng.integers(0, 400, n)],
                       "session_id": [f"s{k}" for k in rng.integers(0, 900, n)],
                       "item_id": [f"i{k}" for k in rng.zipf(1.3, n) % 300]})
    path = tmp_path / "clicks.csv.gz"
    df.to_csv(path, index=False)
    settings = make_settings(als_factors=8, als_iterations=3)
    said: list[str] = []
    before = set(admin_client(settings).list_topics(timeout=10).topics)

    out = run(settings, dataset=str(path), progress=said.append, repeat=1, new_days=1.0)

    new = int((ts > ts.max() - DAY_MS).sum())
    assert out["events"] == n and out["new_events"] == new
    assert out["read"] == new and out["cold"]["read"] == n  # steady state reads only the new day
    for figures in (out, out["cold"]):
        assert figures["refit_s"] > figures["refit_inner_fit_s"] > 0 and figures["implicit_fit_s"] > 0
        # a fit of a few ms: the refit's reading and publishing dominate, so the ratio is far above 1
        assert figures["ratio"] > 1 and figures["overhead_s"] > 0 and figures["read_s"] > 0
    assert out["n_users"] == df.user_id.nunique() and out["n_items"] == df.item_id.nunique()
    assert any("previous run (not timed)" in line for line in said)
    # isolated topics and keys are gone
    assert set(admin_client(settings).list_topics(timeout=10).topics) <= before
    store = RedisStore(settings)
    assert not list(store.client.scan_iter("bench-refit-*", count=1000))
    store.close()
