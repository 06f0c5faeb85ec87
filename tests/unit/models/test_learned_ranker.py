"""The learned ranker: it learns what a weighted sum cannot, orders :func:`models.ranking.rank`'s candidates,
and its file round-trips (LightGBM text, never a pickle) and refuses a foreign one."""

from __future__ import annotations

import numpy as np
import pytest

from models.blend_tuning import feature_set, ndcg, tune_blend
from models.learned_ranker import FEATURES, LearnedRanker, Query, RankerFileError, fit_ranker
from models.ranking import RankingConfig, RankingInputs, Signal, rank

pytest.importorskip("lightgbm")


def queries(seed: int, n: int) -> tuple[list[Query], list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Relevant: personal high XOR repeat high, a rule no weighted sum of the two can express."""
    rng = np.random.default_rng(seed)
    out, captured, relevant = [], [], []
    for _ in range(n):
        x = rng.random((30, len(FEATURES)))
        rel = (x[:, 0] > 0.7) != (x[:, 2] > 0.7)
        cand = np.arange(30)
        out.append(Query(x, rel))
        captured.append((cand, x[:, :5]))
        relevant.append(cand[rel])
    return out, captured, relevant


def test_the_ranker_learns_what_the_blend_cannot() -> None:
    train, cap_train, rel_train = queries(0, 300)
    _, cap_test, rel_test = queries(1, 100)
    ranker = fit_ranker(train, 10, seed=0, threads=1)
    scored = [(c, ranker.score(np.hstack([f, np.random.default_rng(2).random((len(c), len(FEATURES) - 5))]))[:, None])
              for c, f in cap_test]
    learned = ndcg(feature_set(scored, rel_test), [1.0], 10)
    w, _, _ = tune_blend(feature_set(cap_train, rel_train), 10, np.ones(5))
    blend = ndcg(feature_set(cap_test, rel_test), w, 10)
    assert learned > blend + 0.1, (learned, blend)


def test_file_round_trip_and_refusals() -> None:
    ranker = fit_ranker(queries(3, 60)[0], 10, seed=0, threads=1)
    x = np.random.default_rng(4).random((50, len(FEATURES)))
    x[::7, 9] = np.nan  # missing values score the same after loading too
    text = ranker.to_text()
    assert "pickle" not in text[:200] and text.startswith("# streamrec learned ranker")
    np.testing.assert_array_equal(LearnedRanker.from_text(text).score(x), ranker.score(x))
    with pytest.raises(RankerFileError, match="other feature columns"):
        LearnedRanker.from_text(text, features=FEATURES[:-1])
    with pytest.raises(RankerFileError, match="not a streamrec ranker"):
        LearnedRanker.from_text("tree\nversion=v4\n")
    with pytest.raises(ValueError, match="feature columns"):
        ranker.score(x[:, :-1])


class ByRepeatCount:
    """A scorer that ranks by the history's event count (column ``count``): the opposite of the blend here."""

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)[:, FEATURES.index("count")]


def test_rank_orders_by_the_ranker_and_names_the_source_where_each_item_ranks_best() -> None:
    signals = {"repeat": Signal(np.array([1, 2]), np.array([1.0, 0.2])),
               "trending": Signal(np.array([3]), np.array([5.0]))}
    inputs = RankingInputs(signals, history_items=np.array([2, 2, 2, 1]), history_ts_ms=np.array([1, 2, 3, 4]),
                           now_ms=10)
    cfg = RankingConfig(exclude_seen=False, repeat=0.0, trending=0.5)
    assert rank(inputs, cfg, 3).items.tolist() == [3, 1, 2]  # the blend (repeat weighs nothing)
    by_count = rank(inputs, cfg, 3, ByRepeatCount())
    assert by_count.items.tolist() == [2, 1, 3]
    assert by_count.sources == ["repeat", "repeat", "trending"]
