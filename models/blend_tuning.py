"""Learn the hybrid's blend weights on a validation replay, from the per-candidate features it captured.

A validation replay captures, per query, :func:`models.ranking.candidate_features` (candidates in
ascending item order, one normalised feature per source) and the relevant items. Ranking by
``features · w`` is then cheap for any weight vector ``w``, so the search runs on the captured
tensor instead of replaying: a coordinate search over a grid of weights (a few rounds), and a
logistic regression of "relevant" on the features (its coefficients are blend weights too, since
the order of ``sigmoid(w·f + b)`` is the order of ``w·f``). The better of the two on the validation
NDCG@k wins. Ties in the order go to the lower item index, as in :func:`models.ranking.rank`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass(frozen=True)
class FeatureSet:
    """Padded per-query candidates: features (Q×M×S), relevance labels and validity (Q×M), |relevant| (Q)."""

    feats: npt.NDArray[np.float32]
    labels: npt.NDArray[np.bool_]
    valid: npt.NDArray[np.bool_]
    n_relevant: IntArray


def feature_set(captured: Sequence[tuple[IntArray, F64]], relevant: Sequence[IntArray]) -> FeatureSet:
    """Stack the captured ``(candidates, features)`` of each query with its relevant items."""
    if len(captured) != len(relevant):
        raise ValueError("one capture per query")
    m = max([len(c) for c, _ in captured], default=0) or 1
    s = captured[0][1].shape[1] if captured else 1
    feats = np.zeros((len(captured), m, s), dtype=np.float32)
    labels = np.zeros((len(captured), m), dtype=bool)
    valid = np.zeros((len(captured), m), dtype=bool)
    for q, ((cand, f), rel) in enumerate(zip(captured, relevant, strict=True)):
        feats[q, : len(cand)] = f
        labels[q, : len(cand)] = np.isin(cand, rel)
        valid[q, : len(cand)] = True
    return FeatureSet(feats, labels, valid, np.array([len(r) for r in relevant], dtype=np.int64))


def ndcg(fs: FeatureSet, w: npt.ArrayLike, k: int) -> float:
    """Mean NDCG@k of ranking every query's candidates by ``features · w`` (ties to the lower item)."""
    q, m = fs.labels.shape
    if q == 0:
        return 0.0
    score = fs.feats @ np.asarray(w, dtype=np.float32)
    # ties to the lower position (= lower item index): a per-position offset far below any real gap
    score = np.where(fs.valid, score.astype(np.float64) - np.arange(m) * 1e-9, -np.inf)
    kk = min(k, m)
    top = np.argpartition(-score, kk - 1, axis=1)[:, :kk] if kk < m else np.broadcast_to(np.arange(m), (q, m))
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(score, top, axis=1), axis=1), axis=1)
    gains = np.take_along_axis(fs.labels & fs.valid, order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, kk + 2))
    dcg = (gains * disc).sum(axis=1)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.clip(np.minimum(fs.n_relevant, k), 1, k) - 1]
    ok = fs.n_relevant > 0
    return float((dcg[ok] / ideal[ok]).mean()) if ok.any() else 0.0


def coordinate_search(fs: FeatureSet, k: int, start: npt.ArrayLike, rounds: int = 3,
                      grid: Sequence[float] = GRID) -> tuple[F64, float]:
    """Best weights found by trying every grid value for one weight at a time, ``rounds`` times over."""
    w = np.asarray(start, dtype=np.float64).copy()
    best = ndcg(fs, w, k)
    for _ in range(rounds):
        improved = False
        for s in range(len(w)):
            for v in grid:
                trial = w.copy()
                trial[s] = v
                if not trial.any():
                    continue
                score = ndcg(fs, trial, k)
                if score > best + 1e-9:
                    w, best, improved = trial, score, True
        if not improved:
            break
    return w, best


def logistic_weights(fs: FeatureSet, l2: float = 1e-2, iterations: int = 25) -> F64:
    """Coefficients of a class-balanced, L2-regularised logistic regression of relevance on the features."""
    x = fs.feats[fs.valid].astype(np.float64)
    y = fs.labels[fs.valid].astype(np.float64)
    if len(y) == 0 or y.min() == y.max():
        return np.ones(fs.feats.shape[2])
    x = np.hstack([x, np.ones((len(x), 1))])
    pos = y.mean()
    sw = np.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
    beta = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):  # Newton steps
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (sw * (p - y)) / len(y) + reg * beta
        hess = (x * (sw * p * (1 - p))[:, None]).T @ x / len(y) + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1]


def tune_blend(fs: FeatureSet, k: int, start: npt.ArrayLike) -> tuple[F64, float, str]:
    """The better of the coordinate search (from ``start``) and the logistic regression (then refined)."""
    grid_w, grid_score = coordinate_search(fs, k, start)
    lr = logistic_weights(fs)
    lr = lr / max(float(np.abs(lr).max()), 1e-12)
    lr_score = ndcg(fs, lr, k)
    if lr_score > grid_score:
        return lr, lr_score, "logistic regression"
    return grid_w, grid_score, "coordinate search"
