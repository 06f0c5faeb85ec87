"""Cold start at refit: fit the content and profile regressions and publish them with the model version.

* Items: a featurizer is fitted on the whole catalogue (:func:`models.content.fit_featurizer`), every item's
  feature row is published (``content_features``, for ``similar?kind=content``), and a ridge regression
  from features to the new item factors is fitted on the items with at least ``content_min_interactions``
  interacting users. Catalogue items the fit did not see (no interactions) get their predicted vector in
  the version's ``new_items`` before it goes live: they are recommendable from the first request.
* Users: the same for profiles (no text), to the user factors of users with at least
  ``profile_min_interactions`` items; the API predicts a vector for a profiled user without history.

A failure here is logged and the version is published without cold start (nothing else depends on it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from models.cold_start import fit_part
from models.content import ContentConfig, normalized_rows
from models.content_neighbours import NeighbourTable, neighbour_table
from models.training import ALSModelFactors
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.catalog import content_record, iter_catalogue
from streamrec.store.content import (
    ContentPart,
    iter_profiles,
    rows_of,
    write_cold_vectors,
    write_features,
    write_neighbours,
    write_part,
)

log = logging.getLogger("streamrec.batch")


@dataclass
class ColdStart:
    """What the refit publishes for cold start (either part may be missing)."""

    items: ContentPart | None = None
    item_ids: list[str] = field(default_factory=list)
    item_rows: list[bytes] = field(default_factory=list)
    cold_ids: list[str] = field(default_factory=list)
    cold_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    neighbour_ids: list[str] = field(default_factory=list)  # the rows of ``neighbours``, sorted
    neighbours: NeighbourTable | None = None
    profiles: ContentPart | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _part(records: list[dict[str, Any]], cfg: ContentConfig, targets: np.ndarray, train_rows: list[int],
          train_targets: list[int], alpha: float) -> tuple[ContentPart, sp.csr_matrix]:
    """:func:`models.cold_start.fit_part` (the one fit the evaluation replays too), as the store's part."""
    part = fit_part(records, cfg, targets, train_rows, train_targets, alpha)
    return ContentPart(part.featurizer, part.ridge), part.rows


def content_neighbours(ids: list[str], x: sp.csr_matrix, k: int) -> tuple[list[str], NeighbourTable]:
    """Every item's ``k`` content neighbours, its rows in the sorted order the API reads the features in."""
    started = time.monotonic()
    order = sorted(range(len(ids)), key=ids.__getitem__)
    table = neighbour_table(normalized_rows(sp.csr_matrix(x[order], dtype=np.float32)), k)
    log.info("content neighbours of %d items in %.1f s", len(ids), time.monotonic() - started)
    return [ids[n] for n in order], table


def fit_cold_start(settings: Settings, store: RedisStore, item_ids: list[str], user_ids: list[str],
                   matrix: sp.csr_matrix, model: ALSModelFactors) -> ColdStart:
    """Fit both parts from the catalogue and the profiles in Redis and the fitted factors."""
    out = ColdStart()
    catalogue = list(iter_catalogue(store))
    if catalogue:
        users_per_item = np.diff(sp.csc_matrix(matrix).indptr)
        col = {item: j for j, item in enumerate(item_ids)}
        records = [content_record(e) for e in catalogue]
        ids = [e["item_id"] for e in catalogue]
        enough = settings.content_min_interactions
        rows = [n for n, i in enumerate(ids) if i in col and users_per_item[col[i]] >= enough]
        part, x = _part(records, settings.content_config(), model.item_factors, rows, [col[ids[n]] for n in rows],
                        settings.content_ridge_alpha)
        out.items, out.item_ids, out.item_rows = part, ids, rows_of(x)
        cold = [n for n, i in enumerate(ids) if i not in col]
        if part.ridge is not None and cold:
            out.cold_ids = [ids[n] for n in cold]
            out.cold_vectors = part.ridge.predict(x[cold])
        out.summary.update(content_items=len(ids), content_training_items=len(rows),
                           content_features=part.featurizer.n_features, content_cold_items=len(out.cold_ids))
        if len(ids) <= settings.content_neighbours_max_items:
            out.neighbour_ids, out.neighbours = content_neighbours(ids, x, settings.covis_top_n)
            out.summary.update(content_neighbour_items=len(ids))
    profiles = list(iter_profiles(store))
    if profiles:
        items_per_user = np.diff(sp.csr_matrix(matrix).indptr)
        row_of = {user: r for r, user in enumerate(user_ids)}
        users = [u for u, _ in profiles]
        rows = [n for n, u in enumerate(users)
                if u in row_of and items_per_user[row_of[u]] >= settings.profile_min_interactions]
        part, _ = _part([p for _, p in profiles], settings.content_config(profiles=True), model.user_factors, rows,
                        [row_of[users[n]] for n in rows], settings.profile_ridge_alpha)
        out.profiles = part
        out.summary.update(profiles=len(users), profile_training_users=len(rows))
    return out


def publish_cold_start(store: RedisStore, version: str, cold: ColdStart, factors: int) -> None:
    """Write the cold-start keys of a version that is not current yet."""
    if cold.items is not None:
        write_part(store, version, "content", cold.items, factors)
        write_features(store, version, cold.item_ids, cold.item_rows)
        write_cold_vectors(store, version, cold.cold_ids, cold.cold_vectors)
        if cold.neighbours is not None:
            write_neighbours(store, version, cold.neighbour_ids, cold.neighbours)
    if cold.profiles is not None:
        write_part(store, version, "profile", cold.profiles, factors)
