"""`streamrec eval --cold-start`: hidden users, the slices' queries, and the JSON slices (small generated data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.eventlog import EventLog
from ops.eval_cold import hide_users, slice_queries

DAY_S = 86_400
T0 = 1_704_067_200  # 2024-01-01 UTC
CATS, PER_CAT, USERS = 6, 8, 60


def _files(tmp_path: Path, seed: int = 0, days: int = 6, per_day: int = 400) -> tuple[Path, Path, Path]:
    """Users buy from a favourite category; each day from the second on, every category launches a new item,
    and half of a user's purchases go to their category's launches of the last two days; profiles name the
    user's segment (their category)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    ts = T0 + np.sort(rng.integers(0, days * DAY_S, n))
    user = rng.integers(0, USERS, n)
    fav = user % CATS
    day = (ts - T0) // DAY_S
    base = fav * PER_CAT + rng.integers(0, PER_CAT, n)
    launch_day = np.maximum(day - rng.integers(0, 2, n), 1)  # today's or yesterday's launch
    new = CATS * PER_CAT + (launch_day - 1) * CATS + fav
    item = np.where((day >= 1) & (rng.random(n) < 0.5), new, base)
    item = np.where(rng.random(n) < 0.1, rng.integers(0, CATS * PER_CAT, n), item)
    events = pd.DataFrame({"when": ts, "who": [f"u{u}" for u in user], "what": [f"i{i}" for i in item],
                           "kind": np.where(rng.random(n) < 0.3, "purchase", "click")})
    n_items = CATS * PER_CAT + (days - 1) * CATS
    cat_of = [i // PER_CAT if i < CATS * PER_CAT else (i - CATS * PER_CAT) % CATS for i in range(n_items)]
    items = pd.DataFrame({"sku": [f"i{i}" for i in range(n_items)], "category": [f"c{c}" for c in cat_of],
                          "title": [f"thing of kind{c}" for c in cat_of]})
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(USERS)], "segment": [f"s{u % CATS}" for u in range(USERS)],
                          "household_size": [1 + u % 3 for u in range(USERS)]})
    paths = tmp_path / "events.csv", tmp_path / "items.jsonl", tmp_path / "users.parquet"
    events.to_csv(paths[0], index=False)
    items.to_json(paths[1], orient="records", lines=True)
    users.to_parquet(paths[2])
    return paths


def _log() -> EventLog:
    ts = np.arange(12, dtype=np.int64) * 1_000
    user = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    item = np.array([0, 1, 2, 1, 2, 0, 3, 0, 1, 4, 3, 2])
    return EventLog(ts, user, item, np.ones(12, dtype=np.float32), 3, 5)


def test_hidden_users_lose_only_their_events_before_the_test_window() -> None:
    log = _log()
    profiled = np.array([True, True, False])
    out, hidden = hide_users(log, profiled, 6_000, 12_000, 1.0, seed=0)
    assert hidden.tolist() == [True, True, False]  # every profiled user active in the test window; never user 2
    assert set(out.user[out.ts_ms < 6_000].tolist()) == {2}
    assert len(out) == len(log) - 4 and (out.ts_ms >= 6_000).sum() == 6
    half = hide_users(log, profiled, 6_000, 12_000, 0.5, seed=3)[1]
    assert half.sum() == 1 and half.tolist() == hide_users(log, profiled, 6_000, 12_000, 0.5, seed=3)[1].tolist()


def test_slices_hold_the_queries_with_untouched_items_and_hidden_users_first_queries() -> None:
    log = _log()
    lo = 6  # items 3 and 4 have no event before index 6
    slices = slice_queries(log, lo, len(log), False, np.array([False, True, False]))
    q, rel = slices["item_cold_start"]
    assert q.tolist() == [6, 9, 10] and [r.tolist() for r in rel] == [[3], [4], [3]]
    q, rel = slices["user_cold_start"]
    assert q.tolist() == [7] and [r.tolist() for r in rel] == [[0]]  # user 1's first query of the window


def test_eval_cold_start_reports_both_slices_and_content_finds_untouched_items(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    events, items, users = _files(tmp_path)
    code = main(["eval", "--events", str(events), "--columns", "ts=when,user=who,item=what,type=kind",
                 "--validate-from", "2024-01-04", "--test-from", "2024-01-05", "--test-until", "2024-01-07",
                 "--sample", "200", "--val-sample", "100", "--ranker-sample", "0", "--json", "--cold-start",
                 "--items", str(items), "--item-id-column", "sku", "--users", str(users), "--arrival-days", "0.5"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"hybrid", "hybrid_without_content", "trending"} <= set(out["methods"])
    item, user = out["slices"]["item_cold_start"], out["slices"]["user_cold_start"]
    assert item["queries"] > 50 and user["queries"] == round(USERS * 0.5)
    assert set(item["methods"]) == set(out["methods"]) == set(user["methods"])
    # nobody had bought the new items before the test window: metadata puts them in the lists before anyone has
    assert item["methods"]["hybrid"]["hr"] > 1.2 * item["methods"]["hybrid_without_content"]["hr"]
    assert user["methods"]["hybrid"]["ndcg"] > user["methods"]["trending"]["ndcg"]


def test_cold_start_without_metadata_and_metadata_without_cold_start_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    events, items, _ = _files(tmp_path)
    base = ["eval", "--events", str(events), "--columns", "ts=when,user=who,item=what", "--validate-from",
            "2024-01-04", "--test-from", "2024-01-05", "--test-until", "2024-01-07"]
    assert main([*base, "--items", str(items)]) == 2
    assert "--cold-start" in capsys.readouterr().err
    assert main([*base, "--cold-start"]) == 1
    assert "--items" in capsys.readouterr().err
