"""Blend tuning on captured features: its NDCG equals the metric of rank()'s lists; the search finds the signal."""

from __future__ import annotations

import numpy as np

from models.blend_tuning import coordinate_search, feature_set, logistic_weights, ndcg, tune_blend
from models.metrics import ndcg_at_k
from models.ranking import SOURCES, RankingConfig, RankingInputs, Signal, candidate_features, rank


def _queries(seed: int, n: int = 300) -> tuple[list[RankingInputs], list[np.ndarray]]:
    """Random signals; the relevant item is the one with the best 'repeat' score plus noise."""
    rng = np.random.default_rng(seed)
    inputs, relevant = [], []
    for _ in range(n):
        signals = {}
        for s in SOURCES:
            idx = rng.choice(60, size=15, replace=False).astype(np.int64)
            signals[s] = Signal(idx, rng.random(15))
        rep = signals["repeat"]
        noisy = rep.score + rng.normal(0, 0.2, len(rep.score))
        relevant.append(np.array([rep.idx[int(np.argmax(noisy))]]))
        inputs.append(RankingInputs(signals))
    return inputs, relevant


def test_tensor_ndcg_equals_the_metric_of_the_ranking_function() -> None:
    inputs, relevant = _queries(1)
    cfg = RankingConfig(personal=0.3, covisitation=0.2, repeat=0.5, trending=0.1, popular=0.05, candidates=10)
    fs = feature_set([candidate_features(i, cfg) for i in inputs], relevant)
    lists = [rank(i, cfg, 10).items for i in inputs]
    assert abs(ndcg(fs, cfg.weights(), 10) - ndcg_at_k(lists, relevant, 10)) < 1e-12


def test_the_search_and_the_regression_put_the_weight_on_the_informative_source() -> None:
    inputs, relevant = _queries(2)
    cfg = RankingConfig(candidates=15)
    fs = feature_set([candidate_features(i, cfg) for i in inputs], relevant)
    flat = np.ones(len(SOURCES))
    w, score = coordinate_search(fs, 10, flat)
    assert score > ndcg(fs, flat, 10) + 0.1
    assert int(np.argmax(w)) == SOURCES.index("repeat")
    assert int(np.argmax(logistic_weights(fs))) == SOURCES.index("repeat")
    _, best, how = tune_blend(fs, 10, flat)
    assert best >= score - 1e-12 and how in ("coordinate search", "logistic regression")
