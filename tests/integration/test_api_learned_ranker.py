"""The API serves the learned ranker of STREAMREC_RANK_MODEL_FILE on real Redis (with the item statistics
the version carries), and refuses to start on a file that is not one, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from models.learned_ranker import FEATURES, Query, fit_ranker
from online_api.server import ApiProcess, settings_env
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import Interaction, append_history

KEY = "ranker-key-0123456789abcdef"
DAY = 86_400_000


def count_ranker(path: Path) -> None:
    """A ranker that learned "the item the user had most often is the one": relevance follows ``count``."""
    rng = np.random.default_rng(0)
    queries = []
    for _ in range(60):
        x = rng.random((30, len(FEATURES)))
        x[:, FEATURES.index("count")] = rng.integers(0, 6, 30)
        queries.append(Query(x, x[:, FEATURES.index("count")] >= 5))
    path.write_text(fit_ranker(queries, 10, threads=1).to_text())


def top(settings: Settings, user: str) -> list[dict[str, object]]:
    with ApiProcess(settings) as api, httpx.Client(base_url=api.url, headers={"X-API-Key": KEY}, timeout=15) as c:
        api.wait_for("/readyz")
        resp = c.get(f"/v1/users/{user}/recommendations", params={"k": 5, "exclude_seen": "false"})
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]


def test_the_api_orders_by_the_ranker_file(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    ranker_file = tmp_path / "ranker.txt"
    count_ranker(ranker_file)
    # the blend here ignores the history (repeat weight 0): only the ranker can put the regular item first
    blend = make_settings(api_keys=KEY, rank_weight_repeat=0.0, rank_weight_personal=1.0)
    store = RedisStore(blend)
    publish_synthetic(store, BenchConfig(items=200, users=5, factors=8, seed=3, covis_neighbours=0))
    now = now_ms()
    visits = [Interaction("item-42", 5.0, now - n * 7 * DAY, "purchase") for n in range(5, 0, -1)]
    visits.append(Interaction("item-43", 5.0, now - DAY, "purchase"))
    pipe = store.client.pipeline(transaction=False)
    append_history(pipe, store, "regular", visits, cap=200)
    pipe.execute()
    assert [i["item_id"] for i in top(blend, "regular")][:1] != ["item-42"]
    learned = blend.model_copy(update={"rank_model_file": str(ranker_file)})
    got = top(learned, "regular")
    assert got[0]["item_id"] == "item-42", got
    assert got[0]["source"] == "repeat"  # sources still come from the weighted terms: the history's item


def test_a_file_that_is_not_a_ranker_stops_the_api_with_the_reason(make_settings: Callable[..., Settings],
                                                                   tmp_path: Path) -> None:
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04\x95not a model")
    settings = make_settings(api_keys=KEY, rank_model_file=str(bad))
    done = subprocess.run([sys.executable, "-m", "ops.cli", "api", "--port", "1"],
                          env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "not a streamrec ranker file" in done.stderr
