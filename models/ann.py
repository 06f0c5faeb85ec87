"""Approximate nearest-neighbour retrieval over item factors, re-ranked exactly.

A recommendation's personal scores are dot products ``item_factors · user_vector``; scanning every item
costs O(items × factors) per request. :class:`ItemIndex` is a faiss index (inner product) over the rows of
a refit's factor matrix that answers a few hundred *candidates* in well under a millisecond at a million
items. Nothing is served from the index's own (approximate) scores: :func:`top_eligible` filters the
candidates with the caller's exact masks, adds every row newer than the index (items folded in since the
build, scanned exactly: the "tail"), and scores them all with the float32 factors. When the filters leave
fewer candidates than asked for, it answers None and the caller scans exactly, so a filter never lets an
ineligible item through and never makes an answer shorter than the exact scan's.

The index kind is a faiss factory string (``IVF1024,Flat``, ``HNSW32``, ...) with search parameters
(``nprobe=24``, ``efSearch=128``), so the choice is a setting; docs/operations.md gives the measurements
behind the default. Pure numeric core: numpy and faiss only, no I/O.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from models.intsets import union
from models.similarity import normalize_rows

IntArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

TRAIN_ROWS_PER_LIST = 64  # IVF k-means sample: 64 rows per list is faiss's own recommended minimum (39)
_serving = threading.local()  # per-thread marker: OpenMP limited to one thread for searches


class IndexConfigError(ValueError):
    """The factory string or search parameters are not a valid faiss index description."""


@dataclass(frozen=True)
class AnnParams:
    """What index to build and how to search it.

    ``factory``: a faiss index factory string (metric: inner product). ``search``: faiss parameter
    assignments (``nprobe=24``; for HNSW ``efSearch=128``). ``min_fetch``: candidates asked of the index
    at least (the over-fetch that makes the exact re-rank agree with the exact scan). ``max_fetch``: a
    request needing more candidates than this (very selective filters) is scanned exactly instead.
    ``mips``: index rows ``[y, sqrt(R² - |y|²)]`` (R the longest row) under L2 and search ``[q, 0]``: the L2
    order is then exactly the inner-product order (Bachrach et al. 2014), and IVF's k-means lists stay
    balanced on rows of very different lengths, which inner-product lists do not (measured, docs).
    ``train_iterations``: k-means iterations of an IVF's lists (faiss's default 25 costs 2.5x the build).
    """

    factory: str = "IVF2048,Flat"
    search: str = "nprobe=64"
    min_fetch: int = 200
    max_fetch: int = 4_096
    build_threads: int = 0  # OpenMP threads for the build; 0: every core
    mips: bool = False
    train_iterations: int = 10

    def nlist_for(self, n_rows: int) -> str:
        """The factory string with an IVF list count no larger than the rows allow (small catalogues)."""
        head, sep, rest = self.factory.partition(",")
        if not head.startswith("IVF") or not head[3:].isdigit():
            return self.factory
        most = max(1, n_rows // TRAIN_ROWS_PER_LIST)
        return f"IVF{min(int(head[3:]), most)}{sep}{rest}"


class ItemIndex:
    """A faiss inner-product index over rows ``0 .. n_indexed - 1`` of a factor matrix.

    Immutable once built: concurrent searches need no lock. Rows appended to the matrix later (items
    folded in since the build) are not in it; :func:`top_eligible` scans them exactly.
    """

    def __init__(self, index: faiss.Index, n_indexed: int, params: AnnParams, build_s: float) -> None:
        self._index = index
        self.n_indexed = n_indexed
        self.params = params
        self.build_s = build_s

    @classmethod
    def build(cls, factors: F32, params: AnnParams, seed: int = 0) -> ItemIndex:
        """Build over every row of ``factors`` (n × f float32). Raises :class:`IndexConfigError`."""
        mat = _augmented(factors) if params.mips else np.ascontiguousarray(factors, dtype=np.float32)
        n, f = mat.shape
        start = time.perf_counter()
        if params.build_threads > 0:
            faiss.omp_set_num_threads(params.build_threads)  # this thread only (OpenMP ICVs are per thread)
        try:
            metric = faiss.METRIC_L2 if params.mips else faiss.METRIC_INNER_PRODUCT
            index = faiss.index_factory(f, params.nlist_for(n), metric)
            faiss.ParameterSpace().set_index_parameters(index, params.search)  # type: ignore[arg-type]
        except RuntimeError as exc:  # faiss reports a bad description as a C++ exception
            raise IndexConfigError(f"faiss index {params.factory!r} / {params.search!r}: {exc}") from exc
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.cp.niter = params.train_iterations
            lists = int(ivf.nlist) if ivf is not None else 1
            take = min(n, max(10_000, TRAIN_ROWS_PER_LIST * lists))
            rows = np.random.default_rng(seed).choice(n, take, replace=False) if take < n else np.arange(n)
            index.train(mat[np.sort(rows)])
        index.add(mat)
        return cls(index, n, params, time.perf_counter() - start)

    @property
    def faiss_index(self) -> faiss.Index:
        """The faiss index itself (to serialise it: :mod:`online_api.index_files`)."""
        return self._index

    def nbytes(self) -> int:
        """Bytes the index holds (vectors or codes plus its lists or graph), measured by serialising it:
        a full copy for a moment, so for benchmarks and docs, never on the request path."""
        return int(faiss.serialize_index(self._index).nbytes)

    def search(self, vec: F32, fetch: int) -> IntArray:
        """Up to ``fetch`` indexed rows with the highest approximate inner product with ``vec`` (unordered)."""
        if not getattr(_serving, "single", False):
            faiss.omp_set_num_threads(1)  # one query: OpenMP's thread team would only add wake-up latency
            _serving.single = True
        fetch = min(fetch, self.n_indexed)
        query = np.zeros((1, self._index.d), dtype=np.float32)  # with mips, the extra coordinate stays 0
        query[0, : len(vec)] = vec
        _, ids = self._index.search(query, fetch)
        found = ids[0]
        return found[found >= 0].astype(np.int64)


@dataclass(frozen=True)
class ItemIndexes:
    """A model version's two indexes over the same rows: inner product (recommendations: scores are dot
    products) and cosine (similar items: an inner-product index over unit rows). Cosine needs its own: inner
    product ranks by ``|y_j| · cos``, so long rows crowd out the most similar ones (measured: docs/operations.md).
    Each has its own description: on ALS factors HNSW finds the best dot products far better than IVF, whose
    lists real factors' skewed lengths unbalance, while on unit rows IVF is as good and builds in a fraction."""

    dot: ItemIndex
    cosine: ItemIndex

    @classmethod
    def build(cls, factors: F32, dot: AnnParams, cosine: AnnParams) -> ItemIndexes:
        """Both indexes over every row of ``factors``. Raises :class:`IndexConfigError`."""
        return cls(ItemIndex.build(factors, dot), ItemIndex.build(normalize_rows(factors), cosine))

    @property
    def n_indexed(self) -> int:
        return self.dot.n_indexed

    @property
    def build_s(self) -> float:
        return self.dot.build_s + self.cosine.build_s

    def nbytes(self) -> int:
        """Bytes of both (see :meth:`ItemIndex.nbytes`)."""
        return self.dot.nbytes() + self.cosine.nbytes()


def _augmented(factors: F32) -> F32:
    """``[y, sqrt(R² - |y|²)]`` per row, R the longest row: every augmented row has length R."""
    mat = np.asarray(factors, dtype=np.float32)
    sq = np.einsum("ij,ij->i", mat, mat)
    extra = np.sqrt(np.maximum(float(sq.max(initial=0.0)) - sq, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([mat, extra[:, None]]))


def fetch_size(n: int, n_drop: int, pass_rate: float, params: AnnParams) -> int | None:
    """Candidates to ask for so that ``n`` remain after dropping ``n_drop`` and keeping a ``pass_rate`` share.

    None when that exceeds ``params.max_fetch``: the filters are too selective for the index to help.
    """
    if pass_rate <= 0:
        return None
    want = math.ceil((n + n_drop) / pass_rate * 1.25) + 16  # a quarter more: the share is an average
    want = max(want, params.min_fetch)
    return want if want <= params.max_fetch else None


def top_eligible(index: ItemIndex, factors: F32, vec: F32, n: int, *, allowed: BoolArray | None = None,
                 n_allowed: int | None = None, drop: IntArray | None = None,
                 extra: IntArray | None = None) -> tuple[IntArray, F32] | None:
    """Candidates holding the best ``n`` eligible items, with exact scores, positions ascending.

    Eligible: ``allowed[i]`` (None: every row) and ``i`` not in ``drop``. ``n_allowed`` is
    ``allowed.sum()`` when the caller knows it (it sizes the over-fetch). Returns every eligible candidate
    the index found plus every eligible row past ``index.n_indexed`` (folded in since the build) and of
    ``extra`` (rows another signal brings, e.g. trending ones a blend adds to), so the caller ranks them as
    it would rank the full scan. None: fewer than ``n`` eligible candidates were found
    (or the filters are too selective), and the caller must scan exactly.
    """
    total = factors.shape[0]
    drop = np.zeros(0, dtype=np.int64) if drop is None else drop[(drop >= 0) & (drop < total)]
    if allowed is not None and n_allowed is None:
        n_allowed = int(allowed.sum())
    rate = 1.0 if allowed is None or n_allowed is None else n_allowed / max(total, 1)
    n = min(n, total)
    fetch = fetch_size(n, len(drop), rate, index.params)
    if fetch is None:
        return None
    cand = index.search(vec, fetch)
    parts = [cand]
    if total > index.n_indexed:  # the tail: rows newer than the index, always candidates (exact)
        parts.append(np.arange(index.n_indexed, total, dtype=np.int64))
    if extra is not None and len(extra):
        parts.append(extra[(extra >= 0) & (extra < total)].astype(np.int64))
    # unique sorts ascending: ties then resolve to the lower position, as in the exact scan
    cand = union(*parts) if len(parts) > 1 else np.sort(cand)
    if allowed is not None:
        cand = cand[allowed[cand]]
    if len(drop):  # a binary search in the few dropped rows: cheaper than np.isin's sort of both arrays
        ordered = np.sort(drop)
        at = np.minimum(np.searchsorted(ordered, cand), len(ordered) - 1)
        cand = cand[ordered[at] != cand]
    if len(cand) < n or len(cand) == 0:  # the exact scan may find more (or prove there are no more)
        return None
    return cand, exact_scores(factors, cand, vec)


def exact_scores(factors: F32, rows: IntArray, vec: F32) -> F32:
    """``factors[rows] · vec`` in float32: the scan's scores up to float32 rounding (BLAS blocks the full
    scan differently, so the last bits may differ; scores within ~1e-6 may swap places)."""
    return np.asarray(factors[rows] @ np.asarray(vec, dtype=np.float32), dtype=np.float32)
