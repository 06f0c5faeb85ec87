"""Cold start in the API: content features of the served version, content similarity, new items' vectors at
``PUT`` time, and profile vectors for users without (much) history.

:class:`ContentView` is the served version's cold-start state (featurizers, regressions, every item's
content feature row as one unit-row matrix), loaded by the refresher (:func:`load_content`) when the
version changes or items are written (its ``content_log``), and swapped whole like the model view. Writes go through
:class:`ContentService`: a ``PUT`` item is featurized here with the published featurizer, its predicted
vector written to the version's ``new_items`` (every API process and worker reads it within a second),
and this process's refresher woken so it serves it at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.cold_start import content_signal
from models.content import normalized_rows
from models.content_neighbours import NeighbourTable, with_new_rows
from models.ranking import Signal
from models.ridge import cosine_top, fade_weight
from online_api.cache import ServedModel, View
from online_api.schemas import Ranked, Source
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.content import (
    ContentPart,
    content_log_len,
    read_changes,
    read_features,
    read_neighbours,
    read_part,
    store_item_content,
)

F32 = npt.NDArray[np.float32]
NEIGHBOURS_TTL_S = 30.0


@dataclass(frozen=True, eq=False)
class ContentView:
    """One version's cold-start state as served (immutable; replaced whole).

    Rows of ``normed`` are appended as items are written (``PUT``, import); an item written again gets a new
    row and its old one is no longer ``live``, so an update never rebuilds the whole matrix."""

    version: str
    log_len: int  # the version's content_log entries applied
    items: ContentPart | None
    profiles: ContentPart | None
    ids: list[str] = field(default_factory=list)  # of each row (an updated item's old rows too)
    index: dict[str, int] = field(default_factory=dict)  # item → its live row
    normed: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0), dtype=np.float32))
    live: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    table: NeighbourTable | None = None  # every row's content neighbours (published at refit, then extended)

    def with_rows(self, log_len: int, ids: list[str], rows: sp.csr_matrix) -> ContentView:
        """This view with ``ids``' rows (new or replacing their old ones) appended."""
        if not ids:
            return replace(self, log_len=log_len)
        live = np.concatenate([self.live, np.ones(len(ids), dtype=np.bool_)])
        index = dict(self.index)
        for n, item in enumerate(ids):
            old = index.get(item)
            if old is not None:
                live[old] = False
            index[item] = len(self.ids) + n
        normed = sp.csr_matrix(sp.vstack([self.normed, normalized_rows(rows)], format="csr"), dtype=np.float32)
        table = with_new_rows(self.table, normed, live) if self.table is not None else None
        return replace(self, log_len=log_len, ids=[*self.ids, *ids], index=index, normed=normed, live=live,
                       table=table)

    def neighbours(self, item_id: str, k: int) -> list[tuple[str, float]] | None:
        """The item's ``k`` content neighbours from :attr:`table` (live rows only), or None without one."""
        row = self.index.get(item_id)
        if self.table is None or row is None or row >= len(self.table.count):
            return None
        idx, scores = self.table.row(row)
        keep = self.live[idx]
        return [(self.ids[i], float(s)) for i, s in zip(idx[keep][:k].tolist(), scores[keep][:k].tolist(),
                                                        strict=True)]


def load_content(store: RedisStore, version: str, served: ContentView | None) -> ContentView | None:
    """The version's :class:`ContentView`, or None when ``served`` is still it.

    The served version's view only reads the items written since (its ``content_log``); a new version is
    read whole, the log's length first: a write landing during the read is applied again at the next call."""
    if served is not None and served.version == version:
        if served.items is None or content_log_len(store, version) == served.log_len:
            return None
        return served.with_rows(*read_changes(store, version, served.log_len, served.items.featurizer.n_features))
    log_len = content_log_len(store, version)
    items, profiles = read_part(store, version, "content"), read_part(store, version, "profile")
    if items is None:
        return ContentView(version, log_len, None, profiles)
    ids, matrix = read_features(store, version, items.featurizer.n_features)
    published = read_neighbours(store, version)
    if published is None:
        return ContentView(version, log_len, items, profiles, ids, {i: n for n, i in enumerate(ids)},
                           normalized_rows(matrix), np.ones(len(ids), dtype=np.bool_))
    return _with_table(ContentView(version, log_len, items, profiles), ids, matrix, *published)


def _with_table(empty: ContentView, ids: list[str], matrix: sp.csr_matrix, table_ids: list[str],
                table: NeighbourTable) -> ContentView:
    """The view with the published neighbour table: its items' rows first, in its order, then the items
    written since the refit (appended, so the table is extended as for a ``PUT``)."""
    at = {i: n for n, i in enumerate(ids)}
    if any(i not in at for i in table_ids):  # the features changed under the table: scan instead
        return replace(empty, ids=ids, index=at, normed=normalized_rows(matrix),
                       live=np.ones(len(ids), dtype=np.bool_))
    covered = set(table_ids)
    order = [*table_ids, *(i for i in ids if i not in covered)]
    rows = np.fromiter((at[i] for i in order), dtype=np.int64, count=len(order))
    base = replace(empty, ids=table_ids, index={i: n for n, i in enumerate(table_ids)},
                   normed=normalized_rows(matrix[rows[: len(table_ids)]]),
                   live=np.ones(len(table_ids), dtype=np.bool_), table=table)
    rest = order[len(table_ids):]
    return base.with_rows(empty.log_len, rest, matrix[rows[len(table_ids):]]) if rest else base


class ContentService:
    """Content writes and reads of one API process (``view`` is kept current by the refresher)."""

    def __init__(self, settings: Settings, store: RedisStore) -> None:
        self.settings, self.store = settings, store
        self.view: ContentView | None = None
        self.wake: Callable[[], None] = lambda: None  # the refresher's wake-up, set by the app
        self._neighbours: dict[tuple[str, str], tuple[float, list[tuple[str, float]]]] = {}
        self._profiles: dict[tuple[str, int, bytes], F32 | None] = {}  # (version, factors, profile) → vector
        self._arrival_rows: tuple[tuple[Any, ...], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None

    def refresh(self, store: RedisStore, version: str) -> ContentView | None:
        """Reload :attr:`view` if ``version`` or its content changed (:func:`load_content`); the view now."""
        fresh = load_content(store, version, self.view)
        if fresh is not None:
            self.view = fresh
        return self.view

    def put_item(self, item_id: str, entry: Mapping[str, Any], version: str | None, fitted: bool) -> bool:
        """Featurize a catalogue entry and store its row in ``version`` (the served one); an item the version
        was not ``fitted`` on also gets the regression's vector. False when no content model is published
        yet (the next refit featurizes every catalogue item)."""
        view = self.view
        if version is not None and (view is None or view.version != version):
            view = self.refresh(self.store, version)  # the refresher has not caught up with the model yet
        if view is None or view.items is None:
            return False
        store_item_content(self.store, view.version, view.items, [{**entry, "item_id": item_id}], lambda _i: fitted)
        self.wake()
        return True

    def similar(self, item_id: str, k: int, unavailable: frozenset[str]) -> list[tuple[str, float]] | None:
        """The ``k`` available items with the most cosine-similar content, or None when ``item_id`` has no
        content features in the served version."""
        view = self.view
        row = view.index.get(item_id) if view is not None else None
        if view is None or row is None:
            return None
        usable = view.live
        if unavailable:
            usable = usable.copy()
            usable[[i for i in map(view.index.get, unavailable) if i is not None]] = False
        best, scores = cosine_top(view.normed, row, k, usable)
        return [(view.ids[i], float(s)) for i, s in zip(best.tolist(), scores.tolist(), strict=True)]

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """An item's ``covis_top_n`` content neighbours (unavailable ones included: the ranking blocks them):
        from the table the refit published (kept current as items are written), else by a scan (about
        0.6 ms at 50,000 items) cached per version for ``NEIGHBOURS_TTL_S`` (writes in between show late)."""
        view = self.view
        if view is None or item_id not in view.index:
            return []
        tabled = view.neighbours(item_id, self.settings.covis_top_n)
        if tabled is not None:
            return tabled
        now = time.monotonic()
        key = (view.version, item_id)
        hit = self._neighbours.get(key)
        if hit is not None and now - hit[0] < NEIGHBOURS_TTL_S:
            return hit[1]
        if len(self._neighbours) > 50_000:  # bounded: session items come from requests
            self._neighbours.clear()
        got = self.similar(item_id, self.settings.covis_top_n, frozenset()) or []
        self._neighbours[key] = (now, got)
        return got

    def arrivals(self, model: ServedModel | None, history: Sequence[str], n: int) -> Signal | None:
        """"New arrivals like what you buy" (:func:`models.cold_start.content_signal`): the model's rows new
        since the refit that have content features, by the content of the user's ``history``; indices are
        the model's. None without a content model for the served version."""
        view = self.view
        if view is None or view.items is None or model is None or model.version != view.version:
            return None
        rows_of_new, model_of_row = self._new_rows(view, model)
        if not len(rows_of_new) or not history:
            return None
        hist = np.fromiter((r for r in map(view.index.get, history) if r is not None), dtype=np.int64)
        got = content_signal(view.normed, rows_of_new, hist, n)
        return Signal(model_of_row[np.searchsorted(rows_of_new, got.idx)], got.score)

    def _new_rows(self, view: ContentView, model: ServedModel) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The content rows of the model's rows new since the refit (ascending) and the model row of each;
        kept until the content view or the model's rows change."""
        key = (view.version, view.log_len, len(model.item_ids), id(model))
        cached = self._arrival_rows
        if cached is None or cached[0] != key:
            pairs = sorted((view.index[item], m) for m, item in enumerate(model.item_ids[model.n_base:],
                                                                          start=model.n_base)
                           if item in view.index)
            rows = np.array([r for r, _ in pairs], dtype=np.int64)
            cached = self._arrival_rows = (key, rows, np.array([m for _, m in pairs], dtype=np.int64))
        return cached[1], cached[2]

    def profile_weight(self, events: int, version: str | None) -> float:
        """How much a profile vector counts for a user with ``events`` events (0: do not read the profile)."""
        view = self.view
        if view is None or view.profiles is None or view.profiles.ridge is None or view.version != version:
            return 0.0
        return fade_weight(events, self.settings.profile_fade_events)

    def profile_vector(self, raw: bytes | None, n_factors: int) -> F32 | None:
        """The regression's vector of a stored profile (``raw`` JSON), or None; kept per version and profile
        (featurizing one costs more than the rest of a request, and a new user asks again and again)."""
        view = self.view
        if raw is None or view is None or view.profiles is None or view.profiles.ridge is None:
            return None
        key = (view.version, n_factors, bytes(raw))
        if key in self._profiles:
            return self._profiles[key]
        attrs = json.loads(raw)
        vec = view.profiles.ridge.predict(view.profiles.featurizer.transform([attrs]))[0]
        got = vec if len(vec) == n_factors and np.isfinite(vec).all() else None
        if len(self._profiles) > 100_000:  # bounded: profiles come from requests
            self._profiles.clear()
        self._profiles[key] = got
        return got


def with_profile(vec: F32 | None, profile: F32 | None, weight: float) -> F32 | None:
    """The user's vector blended with their profile's: ``(1 - w)·vec + w·profile`` (the profile alone for a
    user without a vector)."""
    if profile is None or weight <= 0:
        return vec
    if vec is None:
        return profile
    return ((1.0 - weight) * vec + weight * profile).astype(np.float32)


def new_arrivals(view: View, vec: F32 | None, k: int, seen: frozenset[str]) -> list[Ranked]:
    """Available items new since the refit (metadata or fold-in vectors), best first: by the user's score when
    there is a vector (``personal``), else by vector length, which the regression and the fold-in make
    longer for items like popular ones (``popular``)."""
    model = view.model
    if model is None or len(model.item_ids) == model.n_base:
        return []
    rows = np.arange(model.n_base, len(model.item_ids))
    if view.available_mask is not None:
        rows = rows[view.available_mask[rows]]
    if seen:
        rows = np.array([r for r in rows.tolist() if model.item_ids[r] not in seen], dtype=np.int64)
    if not len(rows):
        return []
    scores = model.factors[rows] @ vec if vec is not None else model.norms[rows]
    order = np.lexsort((rows, -scores))[:k]
    source = Source.PERSONAL if vec is not None else Source.POPULAR
    return [Ranked(model.item_ids[rows[i]], round(float(scores[i]), 6), source) for i in order.tolist()]
