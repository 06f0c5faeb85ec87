"""What requests score against, held in process memory and swapped atomically.

A background thread (:class:`online_api.refresher.Refresher`) polls Redis about once a second: the current model version
(loading a new one off the request path), items folded in since the refit, the catalogue (unavailable
items, categories), trending and popular items. It then publishes one immutable :class:`View`; a request
reads ``cache.view`` once and uses that snapshot throughout, so a model swap never mixes versions inside
a request and never makes a request wait for a load.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.ann import ItemIndexes
from models.similarity import normalize_rows
from online_api.index_files import SharedFactors
from streamrec.settings import Settings
from streamrec.store import from_bytes

log = logging.getLogger("streamrec.api")

EMPTY_IDX: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)  # compared by identity: a model is one load (its arrays have no ==)
class ServedModel:
    """One model version as served: refit items plus items folded in since, with lookup structures."""

    version: str
    meta: dict[str, Any]
    item_ids: list[str]
    index: dict[str, int]
    factors: npt.NDArray[np.float32]  # n × f, C-contiguous
    # f × n, C-contiguous: ``vec @ factors_t`` is ~30% faster than ``factors @ vec``. With an index it is only a
    # transposed view of ``factors`` (no copy): the exact scan is then the rare fallback.
    factors_t: npt.NDArray[np.float32]
    normed: npt.NDArray[np.float32] | None  # unit rows, for cosine similarity; None with an index (norms suffice)
    gram: npt.NDArray[np.float32]  # YᵀY of the refit's items (what fold-in and explain use)
    n_base: int  # rows 0..n_base-1 are the refit's items, the rest were folded in since
    new_items: dict[bytes, bytes]  # raw new_items hash, to notice changes
    loaded_at: float
    norms: npt.NDArray[np.float32]  # row lengths (0 for an all-zero row)
    ann: ItemIndexes | None  # indexes over rows 0..ann.n_indexed-1 (the refit's); None: exact scan only
    item_stats: npt.NDArray[np.float64] | None = None  # the refit's items' statistics (the learned ranker's)
    base: SharedFactors | None = None  # the refit's rows in the host's shared file, when ``factors`` maps it

    @property
    def n_factors(self) -> int:
        return int(self.factors.shape[1])


@dataclass(frozen=True)
class View:
    """An immutable snapshot for one request: the model plus catalogue and trending resolved onto it."""

    model: ServedModel | None
    unavailable: frozenset[str] = frozenset()
    unavailable_idx: npt.NDArray[np.int64] = field(default_factory=lambda: EMPTY_IDX)
    available_mask: npt.NDArray[np.bool_] | None = None
    n_available: int = 0  # available_mask.sum(): sizes the index's over-fetch
    category_idx: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    # The 1h trending items in the model and their trending / max trending, for the blend (sparse: the
    # rest of the catalogue has 0, so adding trending to personal scores touches only these rows).
    trend_idx: npt.NDArray[np.int64] = field(default_factory=lambda: EMPTY_IDX)
    trend_val: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    trend_of: dict[int, float] = field(default_factory=dict)
    trending: list[tuple[str, float]] = field(default_factory=list)  # 1h, overall, best first
    popular: list[tuple[str, float]] = field(default_factory=list)
    category_of: dict[str, str] = field(default_factory=dict)  # item → category (items outside the model too)


def build_model(version: str, meta: dict[str, Any], item_ids: list[str], factors: np.ndarray,
                gram: np.ndarray, new_items: dict[bytes, bytes], ann: ItemIndexes | None = None,
                item_stats: np.ndarray | None = None, base: SharedFactors | None = None) -> ServedModel:
    """Append folded-in new items (unknown ids only, right length) to a refit's items; ``ann`` is the
    index over the refit's items (the folded-in ones are scanned exactly). With an index and ``base`` (the
    same refit rows in the host's shared file) the matrix maps that file: one copy of them per host."""
    ids, index = list(item_ids), {item: i for i, item in enumerate(item_ids)}
    f = int(factors.shape[1])
    extra = []
    for raw_id, raw_vec in sorted(new_items.items()):
        item = raw_id.decode()
        if item in index or len(raw_vec) != 4 * f:
            continue
        index[item] = len(ids)
        ids.append(item)
        extra.append(from_bytes(raw_vec))
    mat = base.matrix(extra) if base is not None and ann is not None and (base.n, base.f) == factors.shape else None
    if mat is None:  # not shared (or its file went): this process's own copy
        base = None
        mat = np.ascontiguousarray(np.vstack([factors, *extra]) if extra else factors, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1).astype(np.float32)
    if ann is not None:  # one float32 copy of the factors (re-ranking gathers rows; cosine divides by norms)
        return ServedModel(version, meta, ids, index, mat, mat.T, None, np.asarray(gram, dtype=np.float32),
                           len(item_ids), dict(new_items), time.time(), norms, ann, item_stats, base)
    return ServedModel(version, meta, ids, index, mat, np.ascontiguousarray(mat.T), normalize_rows(mat),
                       np.asarray(gram, dtype=np.float32), len(item_ids), dict(new_items), time.time(), norms, None,
                       item_stats)


class ModelCache:
    """Holds the current :class:`View`; replaced whole, never mutated (readers need no lock)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = View(model=None)
        self._lock = threading.RLock()  # serialises writers (the refresher and catalogue writes)
        self._catalogue: dict[str, str] = {}  # item → category
        self._unavailable: frozenset[str] = frozenset()
        self._trending: list[tuple[str, float]] = []
        self._popular: list[tuple[str, float]] = []
        self._model: ServedModel | None = None
        self._per_model: tuple[ServedModel | None, int, int] | None = None  # memo key for category_idx
        self._category_idx: dict[str, npt.NDArray[np.int64]] = {}
        self._catalogue_gen = 0
        # Catalogue writes made in this process, re-applied over refresh reads that started before them.
        self._marks: dict[str, tuple[str | None, bool, float]] = {}

    def publish(self, *, model: ServedModel | None = None, catalogue: dict[str, str] | None = None,
                unavailable: frozenset[str] | None = None, trending: list[tuple[str, float]] | None = None,
                popular: list[tuple[str, float]] | None = None, read_at: float | None = None) -> View:
        """Replace any of the parts and publish a new view built from all of them.

        ``read_at`` (monotonic) is when the caller started reading ``catalogue``/``unavailable`` from Redis:
        catalogue writes this process made after that moment win over what was read.
        """
        with self._lock:
            if read_at is not None:
                catalogue, unavailable = self._reapply_marks(read_at, catalogue, unavailable)
            if model is not None:
                self._model = model
            if catalogue is not None:
                self._catalogue = catalogue
                self._catalogue_gen += 1
            if unavailable is not None:
                self._unavailable = unavailable
            if trending is not None:
                self._trending = trending
            if popular is not None:
                self._popular = popular
            self.view = self._build()
            return self.view

    def _reapply_marks(self, read_at: float, catalogue: dict[str, str] | None,
                       unavailable: frozenset[str] | None) -> tuple[dict[str, str] | None, frozenset[str] | None]:
        now = time.monotonic()
        self._marks = {i: m for i, m in self._marks.items() if now - m[2] < 30}
        late = {i: m for i, m in self._marks.items() if m[2] >= read_at - 0.05}
        if not late:
            return catalogue, unavailable
        if catalogue is not None:
            catalogue = {**catalogue, **{i: m[0] for i, m in late.items() if m[0] is not None}}
        if unavailable is not None:
            unavailable = (unavailable - {i for i, m in late.items() if m[1]}) | {i for i, m in late.items()
                                                                                   if not m[1]}
        return catalogue, unavailable

    def catalogue_unchanged(self, catalogue: dict[str, str]) -> bool:
        """Whether ``catalogue`` is what is published already, with no catalogue write of this process
        pending over it."""
        with self._lock:
            return not self._marks and catalogue == self._catalogue

    def mark_item(self, item_id: str, category: str | None, available: bool) -> None:
        """Apply a catalogue write at once, without waiting for the next refresh."""
        with self._lock:
            self._marks[item_id] = (category, available, time.monotonic())
            catalogue = None
            if category is not None and self._catalogue.get(item_id) != category:
                catalogue = {**self._catalogue, item_id: category}
            unavailable = self._unavailable - {item_id} if available else self._unavailable | {item_id}
            self.publish(catalogue=catalogue, unavailable=unavailable)

    def _build(self) -> View:
        model = self._model
        if model is None:
            return View(None, self._unavailable, trending=self._trending, popular=self._popular,
                        category_of=self._catalogue)
        n = len(model.item_ids)
        unavailable_idx = np.fromiter((i for i in map(model.index.get, self._unavailable) if i is not None),
                                      dtype=np.int64)
        available = np.ones(n, dtype=np.bool_)
        available[unavailable_idx] = False
        memo = (model, self._catalogue_gen, n)
        if self._per_model != memo:
            by_cat: dict[str, list[int]] = {}
            for item, cat in self._catalogue.items():
                i = model.index.get(item)
                if i is not None:
                    by_cat.setdefault(cat, []).append(i)
            self._category_idx = {c: np.array(sorted(ix), dtype=np.int64) for c, ix in by_cat.items()}
            self._per_model = memo
        trend_of: dict[int, float] = {}
        if self._trending and self._trending[0][1] > 0:
            top = self._trending[0][1]
            for item, score in self._trending:
                i = model.index.get(item)
                if i is not None:
                    trend_of[i] = score / top
        trend_idx = np.fromiter(trend_of.keys(), dtype=np.int64, count=len(trend_of))
        trend_val = np.fromiter(trend_of.values(), dtype=np.float32, count=len(trend_of))
        return View(model, self._unavailable, unavailable_idx, available, int(available.sum()),
                    self._category_idx, trend_idx, trend_val, trend_of, self._trending, self._popular, self._catalogue)
