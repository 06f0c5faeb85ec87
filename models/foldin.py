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

The batched kernels of both paths live in :mod:`models.foldin_kernels`; this module holds the API.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import numpy.typing as npt

from models.foldin_kernels import (
    F32,
    F64,
    Histories,
    IntArray,
    as_csr_arrays,
    confidence,
    project,
    solve_long,
    solve_short,
)

# With precomputed projections Woodbury costs ~2L²f + 2L³/3 per row (plus numpy's per-matrix
# overhead) versus ~2Lf² + f³/3 for the direct system; measured at 64 factors the crossover is
# around L = f/2 = 32 (raising it to 40 or 48 measured no faster).
_WOODBURY_MAX_FRACTION = 1 / 2
# Woodbury needs M⁻¹; skip it when M is close to singular (e.g. regularization=0).
_MAX_CONDITION = 1e8


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
                self._table = project(y, self._p)

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
            new._table = np.concatenate([self._table, project(v, self._p)])
        return new

    def fold_in(self, histories: Histories) -> npt.NDArray[np.float32]:
        """Compute the vectors of a batch of rows from their raw interaction weights.

        Args:
            histories: B×n_items CSR matrix of raw weights (row b = user b), or a sequence of
                ``(item_indices, weights)`` pairs, one per user.

        Returns:
            B×f float32 array equal to ``AlternatingLeastSquares.recalculate_user`` on the same rows.
        """
        indptr, indices, weights = as_csr_arrays(histories)
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
        conf = confidence(weights, self.alpha)
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
            out[rows] = solve_long(self._y, self._m32, rows, lengths[rows].tolist(), indptr, indices, aw, bw)
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
        """Woodbury-solve the rows of length 1 to ``wmax`` into ``out`` (see :func:`solve_short`).

        Uses the precomputed projection table, or without one projects this batch's items only.
        """
        table, ids = self._table, indices
        if table is None:
            assert self._p is not None  # only called when Woodbury is enabled
            # Project each distinct item once: a batch of real users repeats popular items.
            in_short = np.repeat(lengths <= wmax, lengths)
            distinct, inverse = np.unique(indices[in_short], return_inverse=True)
            table = project(self._y[distinct], self._p)
            ids = np.zeros(len(indices), dtype=np.int64)
            ids[in_short] = inverse
        solve_short(out, table, ids, wmax, order, starts, indptr, aw, bw)


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
