"""Ranking metrics on hand-checkable cases (expected values computed independently)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import (
    catalogue_coverage,
    evaluate,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

# user 0: hits at ranks 1 and 3 of 4 relevant; user 1: no hit; user 2: hit at rank 2 (padding -1)
RECS = [np.array([10, 11, 12, 13]), np.array([20, 21, 22, 23]), np.array([30, 31, -1, -1])]
RELEVANT = [{10, 12, 50, 51}, {99}, {31}]


def test_hit_precision_recall() -> None:
    assert hit_rate_at_k(RECS, RELEVANT, 4) == pytest.approx(2 / 3)
    assert precision_at_k(RECS, RELEVANT, 4) == pytest.approx((2 / 4 + 0 + 1 / 4) / 3)
    assert recall_at_k(RECS, RELEVANT, 4) == pytest.approx((2 / 4 + 0 + 1 / 1) / 3)
    assert hit_rate_at_k(RECS, RELEVANT, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RECS, RELEVANT, 2) == pytest.approx((1 / 4 + 0 + 1) / 3)


def test_map_at_k() -> None:
    # user 0: (1/1 + 2/3) / min(4, 4); user 1: 0; user 2: (1/2) / min(1, 4)
    expected = ((1 + 2 / 3) / 4 + 0 + 0.5) / 3
    assert map_at_k(RECS, RELEVANT, 4) == pytest.approx(expected)
    # at k=2 user 0 has one hit at rank 1 and min(4, 2) = 2
    assert map_at_k(RECS, RELEVANT, 2) == pytest.approx((0.5 + 0 + 0.5) / 3)


def test_ndcg_at_k() -> None:
    def dcg(ranks: list[int]) -> float:
        return sum(1 / math.log2(r + 1) for r in ranks)

    user0 = dcg([1, 3]) / dcg([1, 2, 3, 4])
    user2 = dcg([2]) / dcg([1])
    assert ndcg_at_k(RECS, RELEVANT, 4) == pytest.approx((user0 + 0 + user2) / 3)
    perfect = [np.array([1, 2, 3])]
    assert ndcg_at_k(perfect, [{1, 2, 3}], 3) == pytest.approx(1.0)
    assert ndcg_at_k(perfect, [{3}], 3) == pytest.approx(0.5)  # 1/log2(4)


def test_users_without_relevant_items_are_skipped() -> None:
    assert hit_rate_at_k([[1, 2], [3, 4]], [{1}, set()], 2) == 1.0
    assert ndcg_at_k([[1]], [set()], 1) == 0.0  # nobody left to evaluate
    with pytest.raises(ValueError):
        precision_at_k([[1]], [{1}, {2}], 1)
    with pytest.raises(ValueError):
        recall_at_k([[1]], [{1}], 0)


def test_coverage_and_evaluate() -> None:
    assert catalogue_coverage(RECS, 100) == pytest.approx(10 / 100)
    assert catalogue_coverage(RECS, 100, k=1) == pytest.approx(3 / 100)
    report = evaluate(RECS, RELEVANT, 4, 100)
    assert report["users"] == 3.0
    assert report["hit_rate@4"] == pytest.approx(2 / 3)
    assert report["coverage@4"] == pytest.approx(0.1)
    assert set(report) == {"hit_rate@4", "precision@4", "recall@4", "map@4", "ndcg@4", "coverage@4", "users"}
