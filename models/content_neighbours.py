"""Every item's content neighbours at once: the fast path of :func:`models.ridge.cosine_top`.

A request that needs a session item's content neighbours (an item without co-visitation) would scan every
content row (about 0.6 ms at 50,000 items, per uncached item). :func:`neighbour_table` computes the
``k`` neighbours of every row in blocks instead (about 0.1 ms per row, once per version, off the request
path), and :func:`with_new_rows` keeps it exact as rows are appended (an item ``PUT``): each new row's
scan gives its own neighbours and, where it beats their ``k``-th, a place in the other rows' lists.
Both give what ``cosine_top`` gives for the same row (same scores, ties to the lower row): one parity test
covers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BLOCK = 128  # rows per block: a 128 × n float32 score block (26 MB at 50,000 rows)
CHUNKS = 512  # per row, for the lower bound of its k-th score


@dataclass(frozen=True, eq=False)
class NeighbourTable:
    """Row ``r``'s neighbours are ``idx[r, :count[r]]`` with ``score[r, :count[r]]``, best first."""

    idx: npt.NDArray[np.int32]  # rows × k
    score: F32  # rows × k
    count: npt.NDArray[np.int16]

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])

    def row(self, r: int) -> tuple[IntArray, F32]:
        """Row ``r``'s neighbours and their cosine similarities, best first."""
        n = int(self.count[r])
        return self.idx[r, :n].astype(np.int64), self.score[r, :n]


def _top_cols(scores: F32, k: int) -> list[IntArray]:
    """Per column of ``scores`` (n × b): the indices of its ``k`` best positive scores, best first, ties to
    the lower index (as cosine_top).

    A full partition of every column is the slow part (about 1 ms per column of 50,000); instead the
    ``k``-th largest of the column's chunk maxima bounds its ``k``-th score from below (``k`` chunks each
    hold a score at least that high), so only the few scores above it are sorted."""
    n, cols = scores.shape
    chunks = max(k, min(CHUNKS, n))
    width = -(-n // chunks)
    maxima = np.zeros((chunks * width, cols), dtype=np.float32)
    maxima[:n] = scores
    maxima = maxima.reshape(chunks, width, cols).max(axis=1)
    bound = np.partition(maxima, chunks - k, axis=0)[chunks - k] if 0 < k < chunks else np.zeros(cols)
    bound = np.maximum(bound, np.float32(np.finfo(np.float32).tiny)).astype(np.float32)
    keep_r, keep_c = np.nonzero(scores >= bound)
    order = np.argsort(keep_c, kind="stable")  # by column, rows ascending within one
    keep_r, keep_c = keep_r[order], keep_c[order]
    starts = np.searchsorted(keep_c, np.arange(cols + 1))
    out = []
    for j in range(cols):
        cand = keep_r[starts[j]:starts[j + 1]]
        out.append(cand[np.lexsort((cand, -scores[cand, j]))[:k]].astype(np.int64))
    return out


def _block_scores(normed: sp.csr_matrix, rows: IntArray, usable: npt.NDArray[np.bool_] | None) -> F32:
    """Cosine of every row with each of ``rows`` (n × len(rows)); self and unusable rows zero. Sparse ·
    dense, the kernel ``cosine_top`` uses, so the scores are the same to the bit."""
    block = np.asarray(normed @ normed[rows].toarray().T, dtype=np.float32)
    block[rows, np.arange(len(rows))] = 0.0
    if usable is not None:
        block[~usable] = 0.0
    return block


def neighbour_table(normed: sp.csr_matrix, k: int, usable: npt.NDArray[np.bool_] | None = None) -> NeighbourTable:
    """The ``k`` most cosine-similar rows of every row of unit-row ``normed`` (only ``usable`` ones as
    neighbours when given)."""
    n = normed.shape[0]
    table = NeighbourTable(np.full((n, k), -1, dtype=np.int32), np.zeros((n, k), dtype=np.float32),
                           np.zeros(n, dtype=np.int16))
    _scan(table, normed, np.arange(n, dtype=np.int64), usable)
    return table


def with_new_rows(table: NeighbourTable, normed: sp.csr_matrix, usable: npt.NDArray[np.bool_] | None = None,
                  ) -> NeighbourTable:
    """``table`` (of ``normed``'s first rows) extended to every row of ``normed``: the new rows' own
    neighbours, and each new row put into the older rows' lists it beats; a list holding a row no longer
    ``usable`` (an updated item's old row) is scanned again. The result is the table built at once."""
    old, n, k = table.idx.shape[0], normed.shape[0], table.k
    if n == old:
        return table
    new = np.arange(old, n, dtype=np.int64)
    block = _block_scores(normed, new, usable)
    idx = np.vstack([table.idx, np.full((len(new), k), -1, dtype=np.int32)])
    score = np.vstack([table.score, np.zeros((len(new), k), dtype=np.float32)])
    count = np.concatenate([table.count, np.zeros(len(new), dtype=np.int16)])
    extended = NeighbourTable(idx, score, count)
    _store(extended, new, block)
    # a new row enters an old row's list only when it beats the list's k-th (a tie goes to the older row)
    kth = np.where(table.count >= k, table.score[:, k - 1], np.float32(0.0)) if k else np.zeros(old, np.float32)
    touched = np.flatnonzero((block[:old] > kth[:, None]).any(axis=1)) if k else np.zeros(0, dtype=np.int64)
    stale = np.zeros(0, dtype=np.int64)
    if usable is not None:  # lists holding a row no longer usable are scanned again (their k+1-th is unknown)
        gone = ~usable[np.clip(table.idx, 0, None)] & (table.idx >= 0)
        stale = np.flatnonzero(gone.any(axis=1))
        touched = np.setdiff1d(touched, stale)
    for r in touched.tolist():
        _merge(idx, score, count, r, new, block[r], usable)
    _scan(extended, normed, stale, usable)
    return extended


def _scan(table: NeighbourTable, normed: sp.csr_matrix, rows: IntArray, usable: npt.NDArray[np.bool_] | None) -> None:
    """``rows``' lists computed over every row of ``normed``, block by block, in place."""
    for start in range(0, len(rows), BLOCK):
        part = rows[start : start + BLOCK]
        _store(table, part, _block_scores(normed, part, usable))


def _store(table: NeighbourTable, rows: IntArray, block: F32) -> None:
    """``rows``' lists (replacing what they held) from their score columns in ``block``, in place."""
    for j, best in enumerate(_top_cols(block, table.k)):
        r = int(rows[j])
        table.idx[r], table.score[r] = -1, 0.0
        table.idx[r, : len(best)], table.score[r, : len(best)], table.count[r] = best, block[best, j], len(best)


def _merge(idx: npt.NDArray[np.int32], score: F32, count: npt.NDArray[np.int16], r: int, new: IntArray,
           new_scores: F32, usable: npt.NDArray[np.bool_] | None) -> None:
    """Row ``r``'s list merged with the new rows' similarities to it, in place (best ``k``, ties lower)."""
    have = int(count[r])
    rows = np.concatenate([idx[r, :have].astype(np.int64), new])
    scores = np.concatenate([score[r, :have], new_scores])
    if usable is not None:
        scores = np.where(usable[rows], scores, np.float32(0.0)).astype(np.float32)
    order = np.lexsort((rows, -scores))
    order = order[scores[order] > 0][: idx.shape[1]]
    idx[r] = -1
    score[r] = 0.0
    idx[r, : len(order)], score[r, : len(order)], count[r] = rows[order], scores[order], len(order)
