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
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from models.ann import AnnParams, IndexConfigError, ItemIndexes
from streamrec.settings import Settings

log = logging.getLogger("streamrec.api")


def ann_params(settings: Settings) -> AnnParams:
    """The index description of these settings."""
    return AnnParams(factory=settings.api_ann_index, search=settings.api_ann_search,
                     min_fetch=settings.api_ann_min_fetch, max_fetch=settings.api_ann_max_fetch)


class IndexBuilder:
    """One build at a time, off the refresher's thread; remembers a version whose build failed (served
    exactly, not rebuilt every tick)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.api_ann
        self.min_items = settings.api_ann_min_items
        self.params = ann_params(settings)
        self._pool: ThreadPoolExecutor | None = None
        self._job: tuple[str, Future[ItemIndexes]] | None = None
        self._failed: set[str] = set()

    def wanted(self, version: str, n_rows: int) -> bool:
        """Whether a version with ``n_rows`` refit items is served through an index."""
        return self.enabled and n_rows >= self.min_items and version not in self._failed

    def index_for(self, version: str, factors: npt.NDArray[np.float32]) -> tuple[ItemIndexes | None, bool]:
        """``(index, ready)``: ``(None, True)`` when the version is scanned exactly (small, switched off, or
        its build failed), ``(None, False)`` while its index is being built, ``(index, True)`` when built."""
        if not self.wanted(version, int(factors.shape[0])):
            return None, True
        job = self._job
        if job is None or job[0] != version:
            # A build for another version still running finishes first (faiss cannot be interrupted); its
            # result is dropped. The factors are the version's own immutable array: no copy.
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="api-index-build")
            self._job = (version, self._pool.submit(ItemIndexes.build, factors, self.params))
            log.info("building the item index of model %s (%d items, %s)", version, factors.shape[0],
                     self.params.factory)
            return None, False
        if not job[1].done():
            return None, False
        self._job = None
        try:
            index = job[1].result()
        except (IndexConfigError, RuntimeError, MemoryError) as exc:
            self._failed.add(version)
            log.error("item index of model %s failed, serving it with the exact scan: %s", version, exc)
            return None, True
        log.info("item index of model %s built in %.1fs", version, index.build_s)
        return index, True

    def close(self) -> None:
        """Stop taking builds (a running one finishes in the background)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
