"""Batched exact fold-in: solve the ALS least-squares step for many new/updated rows at once.

For one row (a user, or an item when the roles are swapped) with history entries (i, w_i),
implicit 0.7.3 (``AlternatingLeastSquares.recalculate_user`` -> ``_als._least_squares``) uses
confidences ``c_i = alpha * w_i`` (a plain product, *not* ``1 + alpha * w``) and solves

    A x = b,   A = YtY + reg * I + sum_i (|c_i| - 1) y_i y_iᵀ,   b = sum_{c_i > 0} c_i y_i

Negative confidences are "disliked" items: they only enter A, with weight |c| - 1. Regularization
is not scaled by history length. Each stored CSR entry is one term, so duplicate entries are NOT
summed first (``models.weighting`` sums duplicates before matrices get here). An empty history
gives a zero vector. We reproduce exactly that system, in float64, with two solvers:

* short histories (the vast majority in practice) use the Woodbury identity. With
  ``M = YtY + reg*I``, ``P = M⁻¹``, ``Z = Y_u P`` and ``K = Z Y_uᵀ`` it reduces to
  ``(I + diag(c - 1) K) s = c⁺``, ``x = Zᵀ s`` -- an L×L system instead of f×f;
* long histories build A with one batched matmul per length bucket and call a batched solve.

Rows are grouped into buckets of similar history length and zero-padded; padded slots get
weight 0 and confidence 0 so they add nothing to either system.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
Histories = sp.csr_matrix | sp.csr_array | Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]

# Woodbury costs ~L²f + L³/3 per row versus ~Lf² + f³/3 for the direct system; measured on
# 64 factors the crossover is a little below f/2 once numpy's per-matrix overheads are counted.
_WOODBURY_MAX_FRACTION = 0.5
# Woodbury needs M⁻¹; skip it when M is close to singular (e.g. regularization=0).
_MAX_CONDITION = 1e8
_POSV = lapack.dposv


def gram(factors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return the f×f Gram matrix ``FᵀF`` in float32, as implicit computes ``YtY``/``XtX``."""
    f = np.asarray(factors, dtype=np.float32)
    return np.ascontiguousarray(f.T @ f)


def fold_in_users(
    item_factors: npt.ArrayLike,
    gram: npt.ArrayLike,
    histories: Histories,
    regularization: float,
    alpha: float,
) -> npt.NDArray[np.float32]:
    """Compute user vectors for a batch of users from their raw interaction weights.

    Args:
        item_factors: n_items×f item factor matrix of the trained model.
        gram: ``item_factors.T @ item_factors`` (see :func:`gram`); passed in so callers cache it.
        histories: B×n_items CSR matrix of raw weights (row b = user b), or a sequence of
            ``(item_indices, weights)`` pairs, one per user.
        regularization: the model's regularization (added once, unscaled).
        alpha: the model's alpha; confidence = alpha * weight, as in implicit 0.7.3.

    Returns:
        B×f float32 array equal to ``AlternatingLeastSquares.recalculate_user`` on the same rows.
    """
    y = np.asarray(item_factors, dtype=np.float32)
    indptr, indices, weights = _as_csr_arrays(histories)
    conf = _confidence(weights, alpha)
    return _solve_rows(y, np.asarray(gram, dtype=np.float64), indptr, indices, conf, regularization)


def fold_in_items(
    user_factors: npt.ArrayLike,
    user_gram: npt.ArrayLike,
    item_histories: Histories,
    regularization: float,
    alpha: float,
) -> npt.NDArray[np.float32]:
    """Compute item vectors from the users who interacted with them (the transposed problem).

    Same system as :func:`fold_in_users` with users and items swapped; equals
    ``AlternatingLeastSquares.recalculate_item``. ``item_histories`` is B×n_users (row = item).
    """
    return fold_in_users(user_factors, user_gram, item_histories, regularization, alpha)


def _as_csr_arrays(histories: Histories) -> tuple[IntArray, IntArray, FloatArray]:
    """Normalise either accepted history format to (indptr, indices, data) arrays."""
    if sp.issparse(histories):
        csr = sp.csr_matrix(histories)
        return csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data
    rows = list(histories)  # type: ignore[arg-type]
    idx = [np.asarray(i, dtype=np.int64).ravel() for i, _ in rows]
    wts = [np.asarray(w).ravel() for _, w in rows]
    for i, w in zip(idx, wts, strict=True):
        if i.shape != w.shape:
            raise ValueError("each history needs as many weights as item indices")
    lengths = np.fromiter((len(i) for i in idx), dtype=np.int64, count=len(idx))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    data = np.concatenate(wts) if wts else np.zeros(0, dtype=np.float32)
    return indptr, indices, data


def _confidence(weights: FloatArray, alpha: float) -> npt.NDArray[np.float32]:
    """Scale weights by alpha in their own dtype, then cast to float32 -- implicit's exact order."""
    data = np.asarray(weights)
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    if alpha != 1.0:
        data = alpha * data
    return data.astype(np.float32)


def _bucket_lengths(lengths: IntArray) -> IntArray:
    """Round lengths up to 1, 2, 3, 4, 6, 8, 12, 16, ... so padding wastes at most a third.

    Each bucket costs a fixed ~20 numpy calls, so few coarse buckets beat many snug ones.
    """
    top = max(int(lengths.max(initial=1)), 1)
    powers = 2 ** np.arange(0, top.bit_length() + 1)
    edges = np.unique(np.concatenate([powers, powers[1:] + powers[:-1] // 2 * (powers[:-1] > 1)]))
    pos = np.searchsorted(edges, lengths, side="left")
    return edges[np.minimum(pos, len(edges) - 1)]


def _solve_rows(
    y: npt.NDArray[np.float32],
    yty: npt.NDArray[np.float64],
    indptr: IntArray,
    indices: IntArray,
    conf: npt.NDArray[np.float32],
    regularization: float,
) -> npt.NDArray[np.float32]:
    """Solve every row's regularised weighted least-squares system; see the module docstring."""
    n_rows, f = len(indptr) - 1, y.shape[1]
    out = np.zeros((n_rows, f), dtype=np.float32)
    lengths = np.diff(indptr)
    if n_rows == 0 or not lengths.any():
        return out

    m = yty + regularization * np.eye(f)
    # implicit treats c <= 0 as a dislike: it drops out of b and enters A with |c| - 1.
    a_weight = np.abs(conf) - np.float32(1.0)
    b_weight = np.where(conf > 0, conf, np.float32(0.0))

    p: npt.NDArray[np.float64] | None = None
    if regularization > 0 and np.trace(m) / regularization < _MAX_CONDITION:
        p = np.linalg.inv(m)
        p = (p + p.T) / 2  # exactly symmetric, so Zᵀ s equals P Y_uᵀ s
    woodbury_max = int(f * _WOODBURY_MAX_FRACTION) if p is not None else 0

    padded = _bucket_lengths(lengths)
    padded[lengths == 0] = 0
    for size in np.unique(padded[padded > 0]):
        rows = np.flatnonzero(padded == size)
        slot = np.arange(size)
        valid = slot[None, :] < lengths[rows, None]
        # padded slots point at entry 0 of the row (any valid index) and get zero weights
        pos = np.where(valid, indptr[rows, None] + slot[None, :], indptr[rows, None])
        yu = y[indices[pos]]  # (B, L, f) float32
        aw = np.where(valid, a_weight[pos], np.float32(0.0))
        bw = np.where(valid, b_weight[pos], np.float32(0.0))
        if p is not None and size <= woodbury_max:
            out[rows] = _woodbury(yu.astype(np.float64), aw, bw, p)
        else:
            out[rows] = _direct(yu, aw, bw, m)
    return out


def _woodbury(
    yu: npt.NDArray[np.float64],
    aw: npt.NDArray[np.float32],
    bw: npt.NDArray[np.float32],
    p: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Solve ``(M + Y_uᵀ diag(aw) Y_u) x = Y_uᵀ bw`` in history space via Woodbury."""
    n, size, f = yu.shape
    z = (yu.reshape(-1, f) @ p).reshape(n, size, f)  # one gemm for the whole bucket
    system = z @ yu.transpose(0, 2, 1)  # K = Y_u P Y_uᵀ, (B, L, L)
    system *= aw[:, :, None]
    diag = np.arange(size)
    system[:, diag, diag] += 1.0
    s = np.linalg.solve(system, bw[:, :, None].astype(np.float64))[:, :, 0]
    return np.einsum("blf,bl->bf", z, s)


def _direct(
    yu: npt.NDArray[np.float32],
    aw: npt.NDArray[np.float32],
    bw: npt.NDArray[np.float32],
    m: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Build ``A = M + Y_uᵀ diag(aw) Y_u`` per row and solve ``A x = Y_uᵀ bw``.

    A is accumulated in float32 like implicit does (it is the dominant L·f² cost and float32
    gemm is twice as fast); the solve itself runs in float64.
    """
    yt = yu.transpose(0, 2, 1)  # (B, f, L)
    a = (yt * aw[:, None, :]) @ yu + m
    b = np.einsum("blf,bl->bf", yu, bw, dtype=np.float64)
    out = np.empty(b.shape, dtype=np.float64)
    # a per-matrix LAPACK posv beats numpy's batched LU solve ~1.5x at f=64
    for row in range(len(a)):
        _, out[row], info = _POSV(a[row], b[row], overwrite_a=1, overwrite_b=0)
        if info != 0:
            raise np.linalg.LinAlgError(f"fold-in system is not positive definite (row {row})")
    return out
