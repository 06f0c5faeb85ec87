"""Ridge regression from content (or profile) features to latent factors, and the cold-start blends.

The refit fits ``factors ≈ features · W + b`` on the items (users) with enough interactions; an item
(user) with features and no interactions then gets the predicted vector, and as interactions arrive the
learnt vector takes over (:func:`blend_by_count`, :func:`fade_weight`). Pure numpy/scipy: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

F32 = npt.NDArray[np.float32]
Matrix: TypeAlias = Any  # a scipy sparse matrix or a dense array


@dataclass(frozen=True)
class RidgeModel:
    """``predict(X) = X · coef + intercept``: ``coef`` is features × factors, ``intercept`` factors long."""

    coef: F32
    intercept: F32

    def predict(self, features: Matrix) -> F32:
        """Predicted factors, one row per feature row."""
        out = features @ self.coef
        return np.ascontiguousarray(np.asarray(out) + self.intercept, dtype=np.float32)

    def to_array(self) -> F32:
        """``coef`` with ``intercept`` as one last row (how it is published: raw float32)."""
        return np.vstack([self.coef, self.intercept[None, :]]).astype(np.float32)

    @staticmethod
    def from_array(arr: npt.ArrayLike, n_features: int) -> RidgeModel:
        """The model :meth:`to_array` wrote (``n_features + 1`` rows)."""
        a = np.asarray(arr, dtype=np.float32)
        a = a.reshape(n_features + 1, -1)
        return RidgeModel(np.ascontiguousarray(a[:-1]), np.ascontiguousarray(a[-1]))


def fit_ridge(features: Matrix, targets: npt.ArrayLike, alpha: float) -> RidgeModel:
    """Ridge with an unpenalised intercept: ``min ‖(X - x̄)W - (Y - ȳ)‖² + alpha ‖W‖²``, ``b = ȳ - x̄W``.

    Solved exactly through the normal equations ``(XᵀX - n x̄x̄ᵀ + alpha I) W = Xᵀ(Y - ȳ)`` so a sparse
    ``X`` is never densified (only its features × features Gram matrix is): scikit-learn's ``Ridge(alpha)``.
    """
    y = np.asarray(targets, dtype=np.float64)
    n = y.shape[0]
    if n == 0:
        raise ValueError("no rows to fit")
    x = sp.csr_matrix(features, dtype=np.float64) if sp.issparse(features) else np.asarray(features, np.float64)
    mean_x = np.asarray(x.mean(axis=0)).ravel()
    mean_y = y.mean(axis=0)
    yc = y - mean_y
    xtx: Any = x.T @ x
    gram = (xtx.toarray() if sp.issparse(xtx) else np.asarray(xtx)) - n * np.outer(mean_x, mean_x)
    gram[np.diag_indices_from(gram)] += alpha
    rhs = np.asarray(x.T @ yc)  # Σ(x - x̄)(y - ȳ) = Xᵀ(y - ȳ), since Σ(y - ȳ) = 0
    coef = scipy.linalg.solve(gram, rhs, assume_a="pos")
    intercept = mean_y - mean_x @ coef
    return RidgeModel(coef.astype(np.float32), intercept.astype(np.float32))


def blend_by_count(content: npt.ArrayLike, learnt: npt.ArrayLike, interactions: float, prior: float) -> F32:
    """``(n · learnt + prior · content) / (n + prior)``: the content vector counts as ``prior`` interactions,
    so it decides for a brand-new item and fades as the item's own interactions accumulate."""
    n = max(float(interactions), 0.0)
    if prior <= 0:
        return np.asarray(learnt, dtype=np.float32)
    c, v = np.asarray(content, dtype=np.float64), np.asarray(learnt, dtype=np.float64)
    return ((n * v + prior * c) / (n + prior)).astype(np.float32)


def fade_weight(events: int, fade_events: int) -> float:
    """Weight of a profile's vector for a user with ``events`` events: 1 without history, falling linearly to
    0 at ``fade_events`` (their own vector alone from then on)."""
    if fade_events <= 0:
        return 0.0
    return max(0.0, 1.0 - events / fade_events)


def cosine_top(normed: sp.csr_matrix, row: int, k: int,
               usable: npt.NDArray[np.bool_] | None = None) -> tuple[npt.NDArray[np.int64], F32]:
    """The ``k`` rows of unit-row ``normed`` most cosine-similar to ``row`` (itself excluded, only
    positive similarities, ``usable`` rows when given), best first, ties to the lower row."""
    scores = np.asarray(normed @ normed[row].toarray().ravel(), dtype=np.float32).ravel()  # sparse · dense
    scores[row] = 0.0
    if usable is not None:
        scores[~usable] = 0.0
    cand = np.flatnonzero(scores > 0)
    if 0 < k < len(cand):  # a category shares a column with thousands: keep those reaching the k-th score
        kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
        cand = cand[scores[cand] >= kth]
    order = np.lexsort((cand, -scores[cand]))[:k]
    return cand[order].astype(np.int64), scores[cand[order]]
