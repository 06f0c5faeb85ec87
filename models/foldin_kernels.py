"""Batched numeric kernels behind :class:`models.foldin.FoldInSolver` (internal; the API is ``models.foldin``).

Input normalisation (histories to CSR arrays, weights to implicit's float32 confidences), the
projection table rows ``[y P | y]``, the Woodbury solves of short histories (closed forms for L = 1
and L = 2, padded buckets of nearby lengths beyond) and the float32 ``sposv`` solves of long ones.
``models.foldin`` explains the system they solve and when each path is taken.
"""

from __future__ import annotations

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

# Bucket planning cost model (µs at 64 factors): a padded bucket costs a fixed overhead of numpy
# calls plus row_cost(padded length) per row. The overhead is tuned on the benchmark's batches:
# 10 (5 buckets there) beat 20 (3 buckets) by ~8% and 2 or 0 (a bucket per length) by 7-20%.
_BUCKET_OVERHEAD = 10.0
_SPOSV = lapack.sposv


def project(y: F32, p: F64) -> F32:
    """The rows ``[y P | y]`` of the projection table, in float32 (``P`` applied in float64)."""
    z = y.astype(np.float64) @ p
    return np.ascontiguousarray(np.concatenate([z.astype(np.float32), y], axis=1))


def as_csr_arrays(histories: Histories) -> tuple[IntArray, IntArray, FloatArray]:
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


def confidence(weights: FloatArray, alpha: float) -> npt.NDArray[np.float32]:
    """Scale weights by alpha in their own dtype, then cast to float32 -- implicit's exact order."""
    data = np.asarray(weights)
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    if alpha != 1.0:
        data = alpha * data
    return data.astype(np.float32, copy=False)


def row_cost(length: int) -> float:
    """Rough µs per row of a Woodbury bucket padded to ``length`` (gathers, K, solve, at f = 64)."""
    return 0.3 + 0.05 * length + 0.009 * length * length


def plan_buckets(starts: list[int], shortest: int, longest: int) -> list[tuple[int, int]]:
    """Group the lengths ``shortest..longest`` into (first length, padded length) buckets.

    ``starts[L + 1] - starts[L]`` rows have length L. Walks the lengths present upwards and closes
    a bucket once padding its rows to the next length would cost more than the fixed cost of
    another bucket (see :func:`row_cost`).
    """
    sizes = [size for size in range(shortest, longest + 1) if starts[size + 1] > starts[size]]
    buckets: list[tuple[int, int]] = []
    first = 0
    for i, size in enumerate(sizes):
        rows = starts[size + 1] - starts[sizes[first]]
        if i == len(sizes) - 1 or rows * (row_cost(sizes[i + 1]) - row_cost(size)) >= _BUCKET_OVERHEAD:
            buckets.append((sizes[first], size))
            first = i + 1
    return buckets


def solve_short(
    out: F32,
    table: F32,
    ids: IntArray,
    wmax: int,
    order: IntArray,
    starts: list[int],
    indptr: IntArray,
    aw: F64,
    bw: F64,
) -> None:
    """Woodbury-solve the rows of length 1 to ``wmax`` into ``out``.

    ``table`` holds the ``[z | y]`` rows and ``ids[e]`` is entry e's row in it. ``order`` and
    ``starts`` group the rows by length; ``aw`` and ``bw`` are each entry's A and b weights plus a
    zero padding entry (see :meth:`models.foldin.FoldInSolver.fold_in`). Written for a cold cache (a
    stream processor does other work between batches): every item is one contiguous ``[z | y]`` row,
    and few numpy calls are made per batch (each costs µs, a row only a fraction of one).
    """
    f, n = table.shape[1] // 2, len(ids)
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
    for lo, size in plan_buckets(starts, 3, wmax):
        rows = order[starts[lo] : starts[size + 1]]
        slot = indptr[rows, None] + np.arange(size)
        pos = np.where(slot < indptr[rows + 1, None], slot, n)
        zy64 = table.take(ids.take(pos, mode="clip"), axis=0).astype(np.float64)
        out[rows] = woodbury(zy64, aw[pos], bw[pos])


def woodbury(zy: F64, aw: F64, bw: F64) -> F64:
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


def solve_long(
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
