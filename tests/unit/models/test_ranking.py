"""The ranking core: normalised blend, exclusion, dominant source; the API and the evaluation rank identically."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from models.covisitation import CovisConfig, aggregate_pairs, decay_units, event_pairs
from models.eventlog import EventLog
from models.hybrid_replay import Query, hybrid_answer
from models.ranking import (
    RankingConfig,
    RankingInputs,
    Signal,
    UserState,
    build_inputs,
    candidate_features,
    rank,
    top_signal,
)
from models.replay_state import TrendingConfig, TrendingScores
from models.signal_state import SignalState, fill


def sig(pairs: dict[int, float]) -> Signal:
    return Signal(np.array(list(pairs), dtype=np.int64), np.array(list(pairs.values()), dtype=np.float64))


def test_each_source_is_divided_by_its_best_recommendable_candidate() -> None:
    inputs = RankingInputs({"repeat": sig({1: 10.0, 2: 5.0, 3: 20.0}), "trending": sig({2: 2.0, 4: 1.0})},
                           seen=np.array([3]))
    cand, feats = candidate_features(inputs, RankingConfig(exclude_seen=True))
    assert cand.tolist() == [1, 2, 4]
    assert feats[:, 2].tolist() == [1.0, 0.5, 0.0]  # item 3 excluded before normalising
    assert feats[:, 3].tolist() == [0.0, 1.0, 0.5]
    cand, feats = candidate_features(inputs, RankingConfig(exclude_seen=False))
    assert cand.tolist() == [1, 2, 3, 4] and feats[2, 2] == 1.0  # groceries: the seen item is a candidate


def test_rank_blends_with_the_weights_and_names_the_dominant_source() -> None:
    inputs = RankingInputs({"repeat": sig({1: 1.0, 2: 0.5}), "trending": sig({2: 1.0, 3: 0.9}),
                            "personal": sig({3: 2.0})})
    cfg = RankingConfig(personal=0.1, covisitation=0.0, repeat=1.0, trending=0.8, popular=0.0)
    out = rank(inputs, cfg, 10)
    # item 2: 0.5 + 0.8 = 1.3; item 1: 1.0; item 3: 0.1 + 0.72 = 0.82
    assert out.items.tolist() == [2, 1, 3]
    assert out.scores.tolist() == pytest.approx([1.3, 1.0, 0.82])
    assert out.sources == ["trending", "repeat", "trending"]
    assert rank(inputs, cfg, 2).items.tolist() == [2, 1]


def test_ties_go_to_the_lower_item_and_blocked_items_never_appear() -> None:
    inputs = RankingInputs({"popular": sig({7: 1.0, 3: 1.0, 5: 1.0})}, blocked=np.array([3]))
    assert rank(inputs, RankingConfig(), 5).items.tolist() == [5, 7]
    assert top_signal(np.array([0.0, 2.0, -1.0, 2.0, np.inf]), 3).idx.tolist() == [1, 3]


def test_arrival_slots_give_the_list_end_to_the_best_new_arrivals_outside_it() -> None:
    # repeat dominates (weight 1), content is weak (0.1): without slots only arrival 1 (also bought) is listed
    inputs = RankingInputs({"repeat": sig({1: 1.0, 2: 0.9, 3: 0.8, 4: 0.7}),
                            "content": sig({8: 0.2, 9: 0.6, 7: 0.3, 1: 0.5})}, blocked=np.array([9]))
    cfg = RankingConfig(repeat=1.0, content=0.1, covisitation=0.0, personal=0.0, trending=0.0, popular=0.0)
    slots = lambda n: replace(cfg, arrival_slots=n)  # noqa: E731
    assert rank(inputs, cfg, 3).items.tolist() == [1, 2, 3]
    out = rank(inputs, slots(1), 3)
    # the slot goes to the best arrival outside the first k - 1 (1 is in them, 9 is blocked): 7
    assert out.items.tolist() == [1, 2, 7] and out.sources == ["repeat", "repeat", "content"]
    assert rank(inputs, slots(2), 3).items.tolist() == [1, 7, 8]  # best content first; 2 gives its place
    strict = replace(cfg, arrival_slots=2, arrival_min_score=0.25)
    assert rank(inputs, strict, 3).items.tolist() == [1, 2, 7]  # 8 (0.2) is too unlike the history
    assert rank(inputs, replace(strict, arrival_min_score=0.7), 3).items.tolist() == [1, 2, 3]
    assert rank(inputs, slots(2), 10).items.tolist() == [1, 2, 3, 4, 7, 8]  # fewer than k: all, by score
    # no arrivals at all (no content model): the slots keep the items by score
    plain = RankingInputs({"repeat": inputs.signals["repeat"]})
    assert rank(plain, slots(2), 3).items.tolist() == [1, 2, 3]
    # fewer arrivals than slots: the rest by score, the arrival last; never more than k
    few = RankingInputs({"repeat": inputs.signals["repeat"], "content": sig({8: 0.3})})
    assert rank(few, slots(3), 3).items.tolist() == [1, 2, 8]
    assert rank(few, slots(3), 1).items.tolist() == [8]


class _Reversed:
    """A stand-in learned ranker that prefers what the blend likes least (its first column: personal)."""

    def score(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return -np.asarray(x, dtype=np.float64)[:, 0]


def test_users_with_less_history_than_the_ranker_minimum_are_ordered_by_the_blend() -> None:
    signals = {"personal": sig({1: 1.0, 2: 0.5, 3: 0.25})}
    cfg = RankingConfig(personal=1.0, ranker_min_history=1)
    without = RankingInputs(signals)
    assert rank(without, cfg, 3, _Reversed()).items.tolist() == [1, 2, 3]  # no history: the blend's order
    with_history = RankingInputs(signals, history_items=np.array([7]), history_ts_ms=np.array([0]), now_ms=1)
    assert rank(with_history, cfg, 3, _Reversed()).items.tolist() == [3, 2, 1]  # the ranker's
    assert rank(without, RankingConfig(personal=1.0), 3, _Reversed()).items.tolist() == [3, 2, 1]  # default: all


def _log(seed: int) -> EventLog:
    rng = np.random.default_rng(seed)
    n = 600
    ts = np.sort(rng.choice(10_000_000, n, replace=False)).astype(np.int64)
    user = rng.integers(0, 15, n).astype(np.int64)
    item = ((user % 3) * 6 + rng.integers(0, 9, n)) % 20
    purchase = rng.random(n) < 0.2
    weight = np.where(purchase, 5.0, 1.0).astype(np.float32)
    return EventLog(ts, user, item.astype(np.int64), weight, 15, 20, purchase=purchase)


class _Worker:
    """What the worker writes to Redis, event by event: histories, co-visitation rows, repeat profiles."""

    def __init__(self, covis: CovisConfig, half_life_s: float) -> None:
        self.covis, self.half_life_s = covis, half_life_s
        self.history: dict[int, list[tuple[int, int]]] = defaultdict(list)  # newest first, as the Redis list
        self.rows: dict[int, dict[int, float]] = defaultdict(dict)
        self.repeat: dict[int, dict[int, float]] = defaultdict(dict)
        self.popular: dict[int, float] = defaultdict(float)

    def apply_batch(self, log: EventLog, events: range) -> None:
        parts = []
        for e in events:
            u, i, t = int(log.user[e]), int(log.item[e]), int(log.ts_ms[e])
            prev = self.history[u][::-1]  # oldest first
            parts.append(event_pairs([p for p, _ in prev], [s for _, s in prev], i, t,
                                     bool(log.purchase[e]), self.covis, 0))  # type: ignore[index]
            self.history[u].insert(0, (i, t))
            w = float(log.weight[e]) * float(decay_units(t, 0, self.half_life_s))
            self.repeat[u][i] = self.repeat[u].get(i, 0.0) + w
            self.popular[i] += float(log.weight[e])
        a, b, w = aggregate_pairs(*(np.concatenate([p[n] for p in parts]) for n in range(3)))
        for x, y, v in zip(a.tolist(), b.tolist(), w.tolist(), strict=True):
            self.rows[x][y] = self.rows[x].get(y, 0.0) + v

    def neighbours(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows.get(item, {})
        best = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[: self.covis.top_n]
        return np.array([k for k, _ in best], dtype=np.int64), np.array([v for _, v in best], dtype=np.float64)


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_the_api_and_the_evaluation_rank_one_state_identically(exclude_seen: bool) -> None:
    log = _log(5)
    covis = CovisConfig(window_s=3_000, max_prev=3, half_life_s=2_000, top_n=50)
    cfg = RankingConfig(personal=0.0, covisitation=1.0, repeat=0.7, trending=0.4, popular=0.1, candidates=8,
                        exclude_seen=exclude_seen, session_items=3, repeat_half_life_s=5_000)
    start, trend_cfg = 300, TrendingConfig(bucket_s=60, buckets=60, half_life_buckets=10)
    worker = _Worker(covis, 5_000)
    for lo in range(0, start, 7):  # the worker applies batches of 7 events
        worker.apply_batch(log, range(lo, min(lo + 7, start)))
    checked = 0
    state = SignalState(log, start, len(log), (covis,), (None,))
    trends = [TrendingScores(trend_cfg, log, start)]
    for j in range(start, len(log), 37):
        worker.apply_batch(log, range(max(start, j - 37), j)) if j > start else None
        state.advance(j)
        trends[0].advance(j, int(trends[0].bucket[j]))
        u, now = int(log.user[j]), int(log.ts_ms[j])
        hist = state.history(u, j)
        seen = np.unique(log.item[hist]) if exclude_seen else np.zeros(0, dtype=np.int64)
        q = Query(j, u, now, 5, hist, seen, np.full(5, -1), state, trends, None, None)
        from_eval = hybrid_answer(cfg)(q)
        # the API: the user's Redis history (newest first), repeat hash, neighbour rows, trending/popular lists
        redis_hist = worker.history[u][::-1]
        user = UserState(None, np.array([i for i, _ in redis_hist], dtype=np.int64),
                         np.array([t for _, t in redis_hist], dtype=np.int64), sig(worker.repeat[u]))
        api_seen = np.unique([i for i, _ in redis_hist]).astype(np.int64) if exclude_seen else np.zeros(0, np.int64)
        shop = {"trending": top_signal(trends[0].score, cfg.candidates, api_seen),
                "popular": top_signal(np.array([worker.popular.get(i, 0.0) for i in range(20)]), cfg.candidates,
                                      api_seen)}
        inputs = build_inputs(user, now, None, None, worker.neighbours, shop, api_seen, cfg)
        from_api = fill(rank(inputs, cfg, 5).items, np.zeros(0, dtype=np.int64), 5)
        assert from_api.tolist() == from_eval.tolist(), j
        checked += int((from_eval >= 0).sum() > 0)
    assert checked > 5
