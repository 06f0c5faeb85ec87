"""The evaluation protocol: time split boundaries, no leakage, hand-checked metrics, exact streaming fold-in."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from models.evaluation import (
    BatchModel,
    EventLog,
    ReplayConfig,
    StreamingState,
    TrendingConfig,
    fit_batch,
    prequential,
    replay,
    time_split,
)
from models.foldin import gram
from models.training import ALSParams

PARAMS = ALSParams(factors=8, regularization=0.1, alpha=2.0, iterations=10, num_threads=1)


def make_log(ts_s: list[float], users: list[int], items: list[int], weights: list[float] | None = None,
             n_users: int | None = None, n_items: int | None = None) -> EventLog:
    """A log from plain lists (timestamps in seconds)."""
    w = np.ones(len(ts_s), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    return EventLog(ts_ms=(np.asarray(ts_s) * 1000).astype(np.int64), user=np.asarray(users, dtype=np.int64),
                    item=np.asarray(items, dtype=np.int64), weight=w,
                    n_users=n_users or max(users) + 1, n_items=n_items or max(items) + 1)


def synthetic_log(seed: int, n_events: int = 1_500, n_users: int = 40, n_items: int = 30, new_items: int = 6,
                  split_at: float = 0.6) -> EventLog:
    """Users like items of their own parity; the last ``new_items`` items only appear after the split."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, 4 * 3_600_000, n_events))
    users = rng.integers(0, n_users, n_events)
    old = n_items - new_items
    pool = np.where(ts < ts[int(split_at * n_events)], old, n_items)
    items = (rng.integers(0, n_items, n_events) % pool).astype(np.int64)
    same = rng.random(n_events) < 0.8  # mostly items of the user's parity
    items = np.where(same, items - (items % 2) + (users % 2), items)
    items = np.minimum(items, pool - 1)
    weights = np.where(rng.random(n_events) < 0.1, 5.0, 1.0).astype(np.float32)
    return EventLog(ts, users.astype(np.int64), items, weights, n_users, n_items)


# ------------------------------------------------------------------------------------------ time split
def test_time_split_puts_boundary_events_in_the_later_window() -> None:
    log = make_log([0, 10, 10, 20, 30, 30], [0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 4])
    assert time_split(log, [0, 10_000, 20_000, 31_000]) == [(0, 1), (1, 3), (3, 6)]
    assert time_split(log, [10_001, 30_000]) == [(3, 4)]
    with pytest.raises(ValueError):
        time_split(log, [20_000, 10_000])


def test_fit_batch_sees_only_events_before_the_split() -> None:
    log = synthetic_log(1)
    start, _ = time_split(log, [int(log.ts_ms[900]), int(log.ts_ms[-1]) + 1])[0]
    model = fit_batch(log, start, PARAMS)
    before_items = np.unique(log.item[:start])
    before_users = np.unique(log.user[:start])
    assert set(np.flatnonzero(model.known_items)) == set(before_items.tolist())
    assert set(np.flatnonzero(model.known_users)) == set(before_users.tolist())
    unseen = np.setdiff1d(np.arange(log.n_items), before_items)
    assert len(unseen) > 0 and not model.item_factors[unseen].any()  # new items get no factors


def test_event_log_rejects_unsorted_or_out_of_range_events() -> None:
    with pytest.raises(ValueError, match="sorted"):
        make_log([2, 1], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="item"):
        make_log([1, 2], [0, 0], [0, 5], n_items=3)


# ------------------------------------------------------------------------------------------ no leakage
def test_prequential_replay_never_sees_the_future() -> None:
    """Rewriting every event from a cut onwards changes no answer given before the cut.

    The rewrite sends all later traffic to one item: any leak of future events into trending, the
    fold-ins or the new-item fold-in would put it in the lists before the cut.
    """
    log = synthetic_log(2)
    start = 900
    model = fit_batch(log, start, PARAMS)
    cfg = ReplayConfig(k=5, trending=(TrendingConfig(60, 30, 10.0), TrendingConfig(600, 6, 3.0)),
                       blend_weights=(0.2, 0.8), refresh_s=5.0, new_item_min_interactions=2)
    queries = np.arange(start, len(log))
    relevant = [log.item[j:j + 1] for j in queries]
    base = replay(log, start, queries, log.user[queries], relevant, model, cfg, log.n_items)

    cut = 1200
    hot = log.n_items - 1  # a new item: no factors in the model
    item = log.item.copy()
    item[cut:] = hot
    changed = replace(log, item=item)
    again = replay(changed, start, queries, changed.user[queries], relevant, model, cfg, log.n_items)
    before = queries < cut
    for method, recs in base.recs.items():
        np.testing.assert_array_equal(recs[before], again.recs[method][before], err_msg=method)
    after = ~before
    first_trending = next(m for m in again.recs if m.startswith("trending"))
    assert (again.recs[first_trending][after] == hot).any(), "the rewrite must matter after the cut"
    assert (again.recs["blend[w=0.8]"][after] == hot).any(), "the hot new item must get folded in and blended"


# ------------------------------------------------------------------------------------------ metrics
def hand_model() -> BatchModel:
    """Two factors: item 0 = (1, 0), item 1 = (0, 1); users 0 and 1 known, items 2+ unknown."""
    items = np.array([[1, 0], [0, 1], [0, 0]], dtype=np.float32)
    users = np.array([[0, 1], [1, 0], [0, 0]], dtype=np.float32)
    return BatchModel(users, items, np.array([True, True, False]), np.array([True, True, False]), gram(items),
                      gram(users), 0.1, 1.0, 0.0)


def test_metrics_per_method_on_a_hand_checked_stream() -> None:
    # item 0 is hot before the replay; then u0 buys 1, u1 buys new item 2, u2 buys 2
    log = make_log([0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 2, 2])
    cfg = ReplayConfig(k=2, blend_weights=(0.5,))
    result = prequential(log, 3, 6, hand_model(), cfg)
    # queries: (u0 @3, {1}), (u1 @4, {2}), (u2 @5, {2}); everyone has seen item 0, so it is excluded.
    # trending: nothing but item 0 -> []; item 1 -> [1]; items 1, 2 (tie, lower index first) -> [1, 2]
    # batch: u0 = (0, 1) ranks item 1 -> [1]; u1 = (1, 0) -> [1]; u2 unknown -> trending [1, 2]
    assert result.recs["trending"].tolist() == [[-1, -1], [1, -1], [1, 2]]
    assert result.recs["batch"].tolist() == [[1, -1], [1, -1], [1, 2]]
    assert result.recs["streaming"].tolist() == result.recs["batch"].tolist()  # no event of theirs since the fit
    assert result.recs["blend"].tolist() == result.recs["batch"].tolist()
    ndcg_rank2 = 1 / np.log2(3)
    expected = {
        "trending": {"hit_rate@2": 1 / 3, "precision@2": 1 / 6, "recall@2": 1 / 3, "map@2": 1 / 6,
                     "ndcg@2": ndcg_rank2 / 3, "coverage@2": 2 / 3},
        "batch": {"hit_rate@2": 2 / 3, "precision@2": 1 / 3, "recall@2": 2 / 3, "map@2": 0.5,
                  "ndcg@2": (1 + ndcg_rank2) / 3, "coverage@2": 2 / 3},
    }
    metrics = result.metrics(2)
    for method, values in expected.items():
        for name, value in values.items():
            assert metrics[method][name] == pytest.approx(value), (method, name)


def test_groups_of_one_timestamp_are_one_query_and_seen_items_are_not_targets() -> None:
    # u0 buys item 0, then items 1 and 2 together at t=10 (one basket), then 1 again at t=20
    log = make_log([0, 10, 10, 20], [0, 0, 0, 0], [0, 1, 2, 1], n_items=3)
    seen = prequential(log, 1, 4, None, ReplayConfig(k=2))
    assert [r.tolist() for r in seen.relevant] == [[1, 2]]  # the basket; the repeat of 1 is no target
    repeats = prequential(log, 1, 4, None, ReplayConfig(k=2, exclude_seen=False))
    assert [r.tolist() for r in repeats.relevant] == [[1, 2], [1]]
    # repeats allowed: the user's own items stay recommendable (ties go to the lower index)
    assert repeats.recs["trending"].tolist() == [[0, -1], [0, 1]]


def test_trending_follows_the_products_decayed_window() -> None:
    # buckets of 60 s, a window of 3 buckets, half-life 1 bucket (weights 1, 1/2, 1/4 by bucket age)
    ts = [0, 0, 0, 0, 0, 0, 0, 130, 130, 130, 250, 250, 250, 250, 370]
    items = [2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0]
    log = make_log(ts, list(range(len(ts))), items)
    cfg = ReplayConfig(k=3, trending=(TrendingConfig(60, 3, 1.0),))
    q = np.array([10, 14])
    result = replay(log, 7, q, log.user[q], [np.array([0]), np.array([0])], None, cfg, 3)
    # at 250 s (bucket 4): item 0 = 3 * 0.5^2 (bucket 2); item 2 (bucket 0) left the window -> popular fill;
    # item 1 has no event yet
    assert result.recs["trending"][0].tolist() == [0, 2, -1]
    # at 370 s (bucket 6): item 0 = 1 * 0.5^2, item 1 = 3 * 0.5^2 -> 1 first; bucket-2 events expired
    assert result.recs["trending"][1].tolist() == [1, 0, 2]


# ------------------------------------------------------------------------------------------ streaming fold-in
def implicit_with(model: BatchModel, user_factors: np.ndarray) -> AlternatingLeastSquares:
    als = AlternatingLeastSquares(factors=model.item_factors.shape[1], regularization=model.regularization,
                                  alpha=model.alpha, dtype=np.float32, num_threads=1)
    als.user_factors, als.item_factors = user_factors.copy(), model.item_factors.copy()
    return als


@pytest.mark.parametrize("cap", [200, 4])
def test_streaming_user_vector_is_the_exact_fold_in_of_the_capped_history(cap: int) -> None:
    log = synthetic_log(3, new_items=0)
    start = 900
    model = fit_batch(log, start, PARAMS)
    cfg = ReplayConfig(history_cap=cap, fold_new_items=False)
    state = StreamingState(model, log, start, cfg)
    reference = implicit_with(model, model.user_factors)
    checked = 0
    for j in range(start, len(log), 37):
        state.advance(int(log.ts_ms[j]))
        u = int(log.user[j])
        mine = np.flatnonzero(log.user[:j] == u)
        vec = state.user_vector(u, j)
        if not (mine >= start).any():  # no event since the fit: the batch vector is served
            assert vec is not None and np.array_equal(vec, model.user_factors[u])
            continue
        kept = mine[-cap:]
        row = sp.csr_matrix((log.weight[kept], (np.zeros(len(kept)), log.item[kept])), shape=(1, log.n_items))
        row.sum_duplicates()
        expected = reference.recalculate_user(0, row)
        assert vec is not None
        np.testing.assert_allclose(vec, np.ravel(expected), atol=1e-4)
        checked += 1
    assert checked > 5


def test_new_items_are_folded_in_after_enough_interactions() -> None:
    log = synthetic_log(4, new_items=4)
    start = 900
    model = fit_batch(log, start, PARAMS)
    day_s = 86_400.0  # one worker refresh after the whole log: users first, then items from their vectors
    state = StreamingState(model, log, start, ReplayConfig(new_item_min_interactions=3, refresh_s=day_s))
    state.advance(int(day_s * 1000))
    new = np.flatnonzero(~model.known_items)
    counts = np.bincount(log.item, minlength=log.n_items)[new]
    assert state.has_vec[new].tolist() == (counts >= 3).tolist()
    item = int(new[counts >= 3][0])
    who = log.user[log.item == item]
    weights = log.weight[log.item == item]
    row = sp.csr_matrix((weights, (np.zeros(len(who)), who)), shape=(1, log.n_users))
    row.sum_duplicates()
    # the ALS item step: (XᵀX + reg·I + Σ (c-1)·x xᵀ) y = Σ c·x with the interactors' current vectors and
    # the refit's XᵀX (what the worker holds), c = alpha · summed weight
    x = state.user_factors[row.indices].astype(np.float64)
    c = model.alpha * row.data.astype(np.float64)
    a = model.user_gram + model.regularization * np.eye(x.shape[1]) + (x.T * (c - 1)) @ x
    expected = np.linalg.solve(a, x.T @ c)
    np.testing.assert_allclose(state.item_factors[item], expected, atol=1e-4)


def test_blend_weight_trades_personal_scores_for_trending_as_the_api_does() -> None:
    # personal scores of u0: item 0 -> 0.5, item 1 -> 1.0; item 0 is the only trending item (t/max t = 1).
    # final = (1-w)·s/max s + w·t/max t: w=0.2 -> item 0 0.6, item 1 0.8; w=0.5 -> item 0 0.75, item 1 0.5
    items = np.array([[1, 0], [0, 1]], dtype=np.float32)
    users = np.array([[0.5, 1.0], [1, 0]], dtype=np.float32)
    model = BatchModel(users, items, np.array([True, True]), np.array([True, True]), gram(items), gram(users),
                       0.1, 1.0, 0.0)
    log = make_log([0, 1, 2], [1, 1, 0], [0, 0, 1])
    result = prequential(log, 2, 3, model, ReplayConfig(k=2, blend_weights=(0.2, 0.5)))
    assert result.recs["trending"].tolist() == [[0, -1]]
    assert result.recs["batch"].tolist() == [[1, 0]]
    assert result.recs["blend[w=0.2]"].tolist() == [[1, 0]]
    assert result.recs["blend[w=0.5]"].tolist() == [[0, 1]]
    metrics = result.metrics(2)
    assert metrics["blend[w=0.2]"]["ndcg@2"] == pytest.approx(1.0)
    assert metrics["blend[w=0.5]"]["ndcg@2"] == pytest.approx(1 / np.log2(3))
    assert metrics["trending"]["hit_rate@2"] == 0.0
