"""Batched exact fold-in: solve the ALS least-squares step for many new/updated rows at once.

For one row (a user, or an item when the roles are swapped) with history entries (i, w_i),
implicit 0.7.3 (``AlternatingLeastSquares.recalculate_user`` -> ``_als._least_squares``) uses
confidences ``c_i = alpha * w_i`` (a plain product, *not* ``1 + alpha * w``) and solves

    A x = b,   A = YtY + reg * I + sum_i (|c_i| - 1) y_i y_iᵀ,   b = sum_{c_i > 0} c_i y_i

Non-positive confidences are "dislikes": they only enter A, with weight |c| - 1. Regularization
is not scaled by history length. Each stored CSR entry is one term, so duplicate entries are NOT
summed first (``models.weighting`` sums duplicates before matrices get here). An empty history
gives a zero vector. :class:`FoldInSolver` builds exactly that system with two solvers:

* short histories (L ≤ f/2, the vast majority in practice) use the Woodbury identity. With
  ``M = YtY + reg*I``, ``P = M⁻¹``, ``Z = Y P`` and ``K = Z_u Y_uᵀ`` it reduces to
  ``(I + diag(|c| - 1) K) s = c⁺``, ``x = Z_uᵀ s`` -- an L×L system instead of f×f. ``M`` is
  fixed per model version, so the solver inverts it once and keeps a table of rows ``[y_i P | y_i]``;
  a batch then only gathers rows. L = 1 and L = 2 have closed forms (``x = z b / (1 + a k)``
  and Cramer's rule); longer histories are grouped into buckets of nearby lengths, padded (a
  padded slot has weight 0 and confidence 0, which makes it an identity row with s = 0) and
  solved with one stacked ``np.linalg.solve``. K, the solves and ``Zᵀ s`` run in float64 from
  the float32 table. Since ``k_ii = y_i P y_iᵀ < 1`` for every training item, ``I + diag(a) K`` is well conditioned
  whenever A is: this path stays ~1e-7 from the exact solution even when implicit's float32
  Cholesky is off by 1e-3 (see the ill-conditioned unit test);
* long histories (rare, but each needs a full f×f solve) build A in float32 with stacked gemms
  and solve it with LAPACK ``sposv`` -- the same float32 Cholesky implicit uses.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

FloatArray = npt.NDArray[np.floating]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.integer]
Histories: TypeAlias = sp.csr_matrix | sp.csr_array | Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]

# With precomputed projections Woodbury costs ~2L²f + 2L³/3 per row (plus numpy's per-matrix
# overhead) versus ~2Lf² + f³/3 for the direct system; measured at 64 factors the crossover is
# around L = f/2 = 32 (raising it to 40 or 48 measured no faster).
_WOODBURY_MAX_FRACTION = 1 / 2
# Woodbury needs M⁻¹; skip it when M is close to singular (e.g. regularization=0).
_MAX_CONDITION = 1e8
# Bucket planning cost model (µs at 64 factors): a padded bucket costs a fixed overhead of numpy
# calls plus _row_cost(padded length) per row. The overhead is tuned on the benchmark's batches:
# 10 (5 buckets there) beat 20 (3 buckets) by ~8% and 2 or 0 (a bucket per length) by 7-20%.
_BUCKET_OVERHEAD = 10.0
_SPOSV = lapack.sposv


def gram(factors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return the f×f Gram matrix ``FᵀF`` in float32, as implicit computes ``YtY``/``XtX``."""
    f = np.asarray(factors, dtype=np.float32)
    return np.ascontiguousarray(f.T @ f)


class FoldInSolver:
    """Exact fold-in against one model version: build once per version, then call :meth:`fold_in`.

    Building inverts ``M = gram + regularization*I`` and, with ``precompute=True`` (the default),
    projects every item: a table of rows ``[y_i P | y_i]`` in float32 (``n_items × 2f``, 512 bytes
    per item at 64 factors: 25 MB and 20-50 ms for 50k items), so a batch of mostly short
    histories costs 1-2 µs per row. The projections are rounded to float32 once -- the precision
    of the factors themselves -- and the systems built from them are solved in float64. With
    ``precompute=False`` each :meth:`fold_in` projects only the items its batch touches, which is
    better for one-off calls on a large catalogue; both give the same results. Instances are
    immutable and safe to share between threads.

    Args:
        item_factors: n_items×f item factor matrix of the trained model.
        gram: ``item_factors.T @ item_factors`` (see :func:`gram`) of the model's factors.
        regularization: the model's regularization (added once, unscaled).
        alpha: the model's alpha; confidence = alpha * weight, as in implicit 0.7.3.
        precompute: project every item now rather than per batch.
    """

    def __init__(
        self,
        item_factors: npt.ArrayLike,
        gram: npt.ArrayLike,
        regularization: float,
        alpha: float,
        *,
        precompute: bool = True,
    ) -> None:
        y = np.ascontiguousarray(item_factors, dtype=np.float32)
        if y.ndim != 2:
            raise ValueError(f"item_factors must be 2-D, got shape {y.shape}")
        g = np.asarray(gram, dtype=np.float64)
        f = y.shape[1]
        if g.shape != (f, f):
            raise ValueError(f"gram must be {f}×{f} for {f} factors, got shape {g.shape}")
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self._y = y
        m = g + self.regularization * np.eye(f)
        self._m32 = m.astype(np.float32)
        self._p: F64 | None = None
        self._table: F32 | None = None
        self._woodbury_max = 0
        if self.regularization > 0 and np.trace(m) / self.regularization < _MAX_CONDITION:
            p = np.linalg.inv(m)
            self._p = (p + p.T) / 2  # exactly symmetric, so Zᵀ s equals P Y_uᵀ s
            self._woodbury_max = max(1, int(f * _WOODBURY_MAX_FRACTION))
            if precompute:
                self._table = _project(y, self._p)

    @property
    def n_items(self) -> int:
        """Number of item rows histories may refer to."""
        return int(self._y.shape[0])

    @property
    def factors(self) -> int:
        """Number of latent factors f."""
        return int(self._y.shape[1])

    def with_extra_items(self, vectors: npt.ArrayLike) -> FoldInSolver:
        """A solver that also knows ``vectors`` as items ``n_items, n_items + 1, ...``.

        For items folded in after the refit: the Gram matrix (hence ``M``) stays the model
        version's, so only the new rows are projected; the existing arrays are copied once
        (O(n_items·f)), so add new items in batches rather than one call per item.
        """
        v = np.asarray(vectors, dtype=np.float32).reshape(-1, self.factors)
        new = copy.copy(self)
        new._y = np.concatenate([self._y, v])
        if self._table is not None and self._p is not None:
            new._table = np.concatenate([self._table, _project(v, self._p)])
        return new

    def fold_in(self, histories: Histories) -> npt.NDArray[np.float32]:
        """Compute the vectors of a batch of rows from their raw interaction weights.

        Args:
            histories: B×n_items CSR matrix of raw weights (row b = user b), or a sequence of
                ``(item_indices, weights)`` pairs, one per user.

        Returns:
            B×f float32 array equal to ``AlternatingLeastSquares.recalculate_user`` on the same rows.
        """
        indptr, indices, weights = _as_csr_arrays(histories)
        out = np.zeros((len(indptr) - 1, self.factors), dtype=np.float32)
        n = len(indices)
        if not n:
            return out
        # one reduction checks both ends: as unsigned, a negative id is huge (numpy would
        # otherwise silently wrap -1, an unknown id, to the last item)
        if indices.view(f"u{indices.itemsize}").max() >= self.n_items:
            raise IndexError(f"history index out of range for {self.n_items} factor rows")
        # Per entry A weight |c| - 1 and b weight c⁺: implicit treats c <= 0 as a dislike that only
        # enters A, with |c| - 1. Both computed in float32 as implicit does. Entry n (weights 0) is
        # where the slots of padded rows point. Few numpy calls: each costs µs on a cold cache.
        conf = _confidence(weights, self.alpha)
        aw, bw = np.zeros(n + 1), np.zeros(n + 1)
        np.subtract(np.abs(conf), np.float32(1.0), out=aw[:n])
        np.maximum(conf, np.float32(0.0), out=bw[:n])
        lengths = indptr[1:] - indptr[:-1]
        # One stable sort groups the rows by length: rows of length L are order[starts[L]:starts[L + 1]].
        order = np.argsort(lengths, kind="stable")
        counts = np.bincount(lengths).tolist()
        wmax = min(self._woodbury_max, len(counts) - 1)
        counts += [0] * (wmax + 2 - len(counts))
        starts = list(itertools.accumulate(counts, initial=0))
        if wmax:
            self._solve_short(out, wmax, order, starts, lengths, indptr, indices, aw, bw)
        if starts[wmax + 1] < len(order):
            rows = order[starts[wmax + 1] :]
            out[rows] = _solve_long(self._y, self._m32, rows, lengths[rows].tolist(), indptr, indices, aw, bw)
        return out

    def _solve_short(
        self,
        out: F32,
        wmax: int,
        order: IntArray,
        starts: list[int],
        lengths: IntArray,
        indptr: IntArray,
        indices: IntArray,
        aw: F64,
        bw: F64,
    ) -> None:
        """Woodbury-solve the rows of length 1 to ``wmax`` into ``out``.

        ``order`` and ``starts`` group the rows by length; ``aw`` and ``bw`` are each entry's A and
        b weights plus a zero padding entry (see :meth:`fold_in`). Written for a cold cache (a stream
        processor does other work between batches): every item is one contiguous ``[z | y]`` row,
        and few numpy calls are made per batch (each costs µs, a row only a fraction of one).
        """
        f, n = self.factors, len(indices)
        table, ids = self._table, indices
        if table is None:
            assert self._p is not None  # only called when Woodbury is enabled
            # Project each distinct item once: a batch of real users repeats popular items.
            in_short = np.repeat(lengths <= wmax, lengths)
            distinct, inverse = np.unique(indices[in_short], return_inverse=True)
            table = _project(self._y[distinct], self._p)
            ids = np.zeros(n, dtype=np.int64)
            ids[in_short] = inverse

        if starts[2] > starts[1]:  # x = z (b / (1 + a k)) with k = z·y: a scalar system
            rows = order[starts[1] : starts[2]]
            e = indptr[rows]
            zy = table.take(ids[e], axis=0)
            z = zy[:, :f]
            k = (z * zy[:, f:]).sum(axis=1, dtype=np.float64)
            # x is z times a scalar: float32 loses nothing the float32 result will not lose anyway
            out[rows] = z * (bw[e] / (1.0 + aw[e] * k)).astype(np.float32)[:, None]
        if wmax >= 2 and starts[3] > starts[2]:  # the 2×2 system by Cramer's rule; K is symmetric
            rows = order[starts[2] : starts[3]]
            e = indptr[rows, None] + np.arange(2)
            zy = table.take(ids[e], axis=0)
            z = zy[:, :, :f]
            kd = (z * zy[:, :, f:]).sum(axis=2, dtype=np.float64)
            k12 = (z[:, 0] * zy[:, 1, f:]).sum(axis=1, dtype=np.float64)
            a, b = aw[e], bw[e]
            d = 1.0 + a * kd  # I + diag(a) K = [[d0, a0 k12], [a1 k12, d1]]
            ak = a * k12[:, None]
            det = d[:, 0] * d[:, 1] - ak[:, 0] * ak[:, 1]
            s = (d[:, ::-1] * b - ak * b[:, ::-1]) / det[:, None]
            out[rows] = (z * s[:, :, None]).sum(axis=1)
        for lo, size in _plan_buckets(starts, 3, wmax):
            rows = order[starts[lo] : starts[size + 1]]
            slot = indptr[rows, None] + np.arange(size)
            pos = np.where(slot < indptr[rows + 1, None], slot, n)
            zy64 = table.take(ids.take(pos, mode="clip"), axis=0).astype(np.float64)
            out[rows] = _woodbury(zy64, aw[pos], bw[pos])


def fold_in_users(
    item_factors: npt.ArrayLike,
    gram: npt.ArrayLike,
    histories: Histories,
    regularization: float,
    alpha: float,
) -> npt.NDArray[np.float32]:
    """Compute user vectors for a batch of users from their raw interaction weights.

    A one-off convenience: it builds a :class:`FoldInSolver` that projects only this batch's
    items. Code that folds in many batches against one model should build the solver once.

    Args:
        item_factors: n_items×f item factor matrix of the trained model.
        gram: ``item_factors.T @ item_factors`` (see :func:`gram`) of these very factors;
            passed in so callers compute it once per model.
        histories: B×n_items CSR matrix of raw weights (row b = user b), or a sequence of
            ``(item_indices, weights)`` pairs, one per user.
        regularization: the model's regularization (added once, unscaled).
        alpha: the model's alpha; confidence = alpha * weight, as in implicit 0.7.3.

    Returns:
        B×f float32 array equal to ``AlternatingLeastSquares.recalculate_user`` on the same rows.
    """
    solver = FoldInSolver(item_factors, gram, regularization, alpha, precompute=False)
    return solver.fold_in(histories)


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


def _project(y: F32, p: F64) -> F32:
    """The rows ``[y P | y]`` of the projection table, in float32 (``P`` applied in float64)."""
    z = y.astype(np.float64) @ p
    return np.ascontiguousarray(np.concatenate([z.astype(np.float32), y], axis=1))


def _as_csr_arrays(histories: Histories) -> tuple[IntArray, IntArray, FloatArray]:
    """Normalise either accepted history format to (indptr, indices, data) arrays."""
    if sp.issparse(histories):
        csr = histories if isinstance(histories, sp.csr_matrix | sp.csr_array) else sp.csr_matrix(histories)
        # int64 once here spares numpy a cast in every fancy index below
        return csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data
    rows: list[tuple[npt.ArrayLike, npt.ArrayLike]] = list(histories)
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
    return data.astype(np.float32, copy=False)


def _row_cost(length: int) -> float:
    """Rough µs per row of a Woodbury bucket padded to ``length`` (gathers, K, solve, at f = 64)."""
    return 0.3 + 0.05 * length + 0.009 * length * length


def _plan_buckets(starts: list[int], shortest: int, longest: int) -> list[tuple[int, int]]:
    """Group the lengths ``shortest..longest`` into (first length, padded length) buckets.

    ``starts[L + 1] - starts[L]`` rows have length L. Walks the lengths present upwards and closes
    a bucket once padding its rows to the next length would cost more than the fixed cost of
    another bucket (see :func:`_row_cost`).
    """
    sizes = [size for size in range(shortest, longest + 1) if starts[size + 1] > starts[size]]
    buckets: list[tuple[int, int]] = []
    first = 0
    for i, size in enumerate(sizes):
        rows = starts[size + 1] - starts[sizes[first]]
        if i == len(sizes) - 1 or rows * (_row_cost(sizes[i + 1]) - _row_cost(size)) >= _BUCKET_OVERHEAD:
            buckets.append((sizes[first], size))
            first = i + 1
    return buckets


def _woodbury(zy: F64, aw: F64, bw: F64) -> F64:
    """Solve ``(M + Y_uᵀ diag(aw) Y_u) x = Y_uᵀ bw`` for a padded bucket via Woodbury.

    ``zy`` is (B, L, 2f): each entry's projection ``z = y M⁻¹`` then ``y``. The L×L system is
    ``(I + diag(aw) K) s = bw`` with ``K = z yᵀ``, and ``x = zᵀ s``. Padded slots have
    ``aw = bw = 0``: identity rows with ``s = 0``, so they contribute nothing.
    """
    f = zy.shape[2] // 2
    z = zy[:, :, :f]
    system = z @ zy[:, :, f:].transpose(0, 2, 1)
    system *= aw[:, :, None]
    diag = np.arange(zy.shape[1])
    system[:, diag, diag] += 1.0
    s = np.linalg.solve(system, bw[:, :, None])
    return (z.transpose(0, 2, 1) @ s)[:, :, 0]


def _solve_long(
    y: F32, m32: F32, rows: IntArray, lens: list[int], indptr: IntArray, indices: IntArray, aw: F64, bw: F64
) -> F32:
    """Build ``A = M + Y_uᵀ diag(aw) Y_u`` for each long history and solve ``A x = Y_uᵀ bw``.

    Long histories are rare but each needs a full f×f solve. A is accumulated in float32 like
    implicit does, and solved with LAPACK ``sposv`` -- the Cholesky routine implicit uses --
    which at f = 64 is ~2x faster than numpy's batched LU. ``rows`` come sorted by length
    ``lens``; rows within 25% of each other's length are padded (padded slots point at the
    weight-0 entry n) and their A built in one stacked matmul; then ``sposv`` solves row by row,
    in place.
    """
    out = np.empty((len(rows), y.shape[1]), dtype=np.float32)
    n, first = len(indices), 0
    while first < len(rows):
        last = first + 1
        while last < len(rows) and lens[last] * 4 <= lens[first] * 5:
            last += 1
        group, size = rows[first:last], lens[last - 1]
        slot = indptr[group, None] + np.arange(size)
        pos = np.where(slot < indptr[group + 1, None], slot, n)
        yu = y.take(indices.take(pos, mode="clip"), axis=0)
        yt = yu.transpose(0, 2, 1)
        a = (yt * aw[pos].astype(np.float32)[:, None, :]) @ yu
        a += m32
        rhs = (yt @ bw[pos].astype(np.float32)[:, :, None])[:, :, 0]
        for r in range(last - first):
            # A is symmetric, so pass its Fortran-ordered transpose; both are solved in place
            b = rhs[r]
            _, x, info = _SPOSV(a[r].T, b, overwrite_a=1, overwrite_b=1)
            if info != 0:
                raise np.linalg.LinAlgError("fold-in system is not positive definite; raise regularization")
            if x is not b:  # f2py had to copy after all
                b[:] = x
        out[first:last] = rhs
        first = last
    return out
