"""Builds a model version's item indexes (:class:`models.ann.ItemIndexes`) on a thread of its own.

The refresher asks :meth:`IndexBuilder.index_for` on every tick; the first ask for a version starts the
build and answers "not ready", later asks answer the index once it is built. The refresher meanwhile keeps
serving what it served (the previous version with its own index, or at start-up the new version with the
exact scan) and keeps its other work going (catalogue, trending, ``/readyz``), which a build of a million
items inline (tens of seconds) would stall. A version is never served with another version's index: an
index belongs to the :class:`online_api.cache.ServedModel` built with it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.ann import AnnParams, IndexConfigError, ItemIndexes
from online_api.index_files import SharedFactors, SharedIndexes
from streamrec.settings import Settings

log = logging.getLogger("streamrec.api")


def ann_params(settings: Settings) -> tuple[AnnParams, AnnParams]:
    """The descriptions of the two indexes (dot product, cosine) of these settings."""
    lo, hi = settings.api_ann_min_fetch, settings.api_ann_max_fetch
    # Inner product through the L2 transform (AnnParams.mips): exact order, balanced IVF lists. Unit rows
    # need none: their inner product is the cosine.
    return (AnnParams(factory=settings.api_ann_index, search=settings.api_ann_search, min_fetch=lo, max_fetch=hi,
                      mips=True),
            AnnParams(factory=settings.api_ann_similar_index, search=settings.api_ann_similar_search, min_fetch=lo,
                      max_fetch=hi))


class _Build:
    """One build on a daemon thread (a build still running at shutdown must not hold the process up)."""

    def __init__(self, version: str, factors: npt.NDArray[np.float32], params: tuple[AnnParams, AnnParams],
                 shared: SharedIndexes | None = None) -> None:
        self.version = version
        self.shared = shared
        self.result: ItemIndexes | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(factors, params), name="api-index-build",
                                        daemon=True)
        self._thread.start()

    def _run(self, factors: npt.NDArray[np.float32], params: tuple[AnnParams, AnnParams]) -> None:
        try:
            self.result = self._shared(factors, params) if self.shared is not None else None
            if self.result is None:
                self.result = ItemIndexes.build(factors, *params)
        except (IndexConfigError, RuntimeError, MemoryError) as exc:  # faiss raises RuntimeError
            self.error = exc
        finally:
            self.done.set()

    def _shared(self, factors: npt.NDArray[np.float32], params: tuple[AnnParams, AnnParams]) -> ItemIndexes | None:
        """The host's shared copy (built here if no process has); None if the directory is unusable."""
        assert self.shared is not None
        try:
            return self.shared.get_or_build(self.version, factors, params, ItemIndexes.build)
        except OSError as exc:
            log.warning("item indexes not shared (%s): building this process's own", exc)
            return None


class IndexBuilder:
    """One build at a time, off the refresher's thread; remembers a version whose build failed (served
    exactly, not rebuilt every tick)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.api_ann
        self.min_items = settings.api_ann_min_items
        self.params = ann_params(settings)
        self._job: _Build | None = None
        self._failed: set[str] = set()
        where = settings.api_index_dir
        # Shared only on a host with the directory's parent (a memory file system such as /dev/shm).
        self.shared = SharedIndexes(where, settings.redis_prefix) if where and Path(where).parent.is_dir() else None

    def wanted(self, version: str, n_rows: int) -> bool:
        """Whether a version with ``n_rows`` refit items is served through an index."""
        return self.enabled and n_rows >= self.min_items and version not in self._failed

    def index_for(self, version: str, factors: npt.NDArray[np.float32]) -> tuple[ItemIndexes | None, bool]:
        """``(index, ready)``: ``(None, True)`` when the version is scanned exactly (small, switched off, or
        its build failed), ``(None, False)`` while its index is being built, ``(index, True)`` when built."""
        if not self.wanted(version, int(factors.shape[0])):
            return None, True
        job = self._job
        if job is None or job.version != version:
            if job is not None and not job.done.is_set():
                return None, False  # one build at a time (faiss cannot be interrupted): this one starts next
            # The factors are the version's own immutable array: no copy.
            self._job = _Build(version, factors, self.params, self.shared)
            log.info("building the item indexes of model %s (%d items, %s; %s)", version, factors.shape[0],
                     self.params[0].factory, self.params[1].factory)
            return None, False
        if not job.done.is_set():
            return None, False
        self._job = None
        if job.result is None:
            self._failed.add(version)
            log.error("item index of model %s failed, serving it with the exact scan: %s", version, job.error)
            return None, True
        log.info("item index of model %s built in %.1fs", version, job.result.build_s)
        return job.result, True

    def factors_for(self, version: str) -> SharedFactors | None:
        """The host's shared file of ``version``'s refit factors, once its indexes are shared (else None)."""
        return self.shared.factors_for(version) if self.shared is not None else None

    def close(self) -> None:
        """Drop the build in progress, if any (its daemon thread ends with the build or the process), and stop
        sharing the served version's files (the last process out removes them)."""
        self._job = None
        if self.shared is not None:
            self.shared.close()
