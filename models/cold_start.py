"""Cold start from content: the regressions the refit fits, and the same state for an offline replay.

:func:`fit_part` is what the batch refit fits for items (catalogue metadata → item factors) and for users
(profiles → user factors); :func:`replay_cold_start` builds a :class:`ColdStart` over an event log's index
space from the same fit, so ``streamrec eval --cold-start`` replays what the product serves:

* every item with metadata and no vector gets the regression's vector before the replay starts (its
  catalogue entry was put before it sold), blended with its folded-in vector by interaction count once it
  has enough interactions (:func:`models.ridge.blend_by_count`, as the worker does);
* a session item without co-visitation neighbours gets its content neighbours (cosine of the feature rows,
  the API's ``similar?kind=content``);
* a user with a profile gets the profile regression's vector, fading out as their events arrive
  (:func:`models.ridge.fade_weight`, as the API does).

Pure numpy/scipy (no I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.content import ContentConfig, Featurizer, Record, fit_featurizer, normalized_rows
from models.ranking import Signal, top_signal
from models.ridge import RidgeModel, cosine_top, fade_weight, fit_ridge

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
MIN_TRAINING_ROWS = 10  # fewer examples than this fit noise, not a mapping: no regression


@dataclass(frozen=True)
class Part:
    """A fitted featurizer, its feature rows of the records it was fitted on, and the regression (None when
    there were too few examples)."""

    featurizer: Featurizer
    rows: sp.csr_matrix
    ridge: RidgeModel | None


def fit_part(records: Sequence[Record], cfg: ContentConfig, targets: npt.ArrayLike, train_rows: Sequence[int],
             train_targets: Sequence[int], alpha: float) -> Part:
    """Fit a featurizer on ``records`` and, with at least :data:`MIN_TRAINING_ROWS` examples, the ridge from
    the feature rows ``train_rows`` to the rows ``train_targets`` of ``targets``."""
    featurizer = fit_featurizer(records, cfg)
    x = featurizer.transform(records)
    ridge = None
    if len(train_rows) >= MIN_TRAINING_ROWS:
        ridge = fit_ridge(x[list(train_rows)], np.asarray(targets)[list(train_targets)], alpha)
    return Part(featurizer, x, ridge)


@dataclass(frozen=True)
class ColdStartConfig:
    """The product's cold-start settings (``STREAMREC_CONTENT_*``, ``STREAMREC_PROFILE_*``)."""

    items: ContentConfig = field(default_factory=ContentConfig)
    profiles: ContentConfig = field(default_factory=lambda: ContentConfig(text_fields=(), tag_fields=()))
    content_min_interactions: int = 5
    content_ridge_alpha: float = 1.0
    content_prior_interactions: float = 3.0
    content_neighbours: bool = True
    neighbours_top_n: int = 50
    profile_min_interactions: int = 3
    profile_ridge_alpha: float = 1.0
    profile_fade_events: int = 10


Neighbours = Callable[[int], tuple[IntArray, F64]]
NEVER = np.iinfo(np.int64).max


def content_signal(rows: sp.csr_matrix, candidates: IntArray, history: IntArray, n: int) -> Signal:
    """"New arrivals like what you buy": the ``n`` ``candidates`` (new items) whose unit content rows are most
    like the user's history, ``score(i) = row_i · Σ_h row_h / |history|`` (each history entry counts once, so
    what the user buys often counts more); the API and the replay both call it."""
    have = history[rows.indptr[history + 1] > rows.indptr[history]] if len(history) else history
    if not len(have) or not len(candidates):
        return Signal.empty()
    profile = np.asarray(rows[have].sum(axis=0), dtype=np.float64).ravel() / len(have)
    scores = np.asarray(rows[candidates] @ profile, dtype=np.float64).ravel()
    best = top_signal(scores, n)
    return Signal(candidates[best.idx], best.score)


@dataclass
class ColdStart:
    """Content state over a log's dense item and user indices (rows of items or users without a record are
    False in the masks)."""

    cfg: ColdStartConfig
    item_vectors: F32  # n_items × factors: the regression's vector (zero without a record or regression)
    has_content_vector: npt.NDArray[np.bool_]
    item_rows: sp.csr_matrix  # n_items × features, unit rows (empty without a record)
    has_record: npt.NDArray[np.bool_]
    user_vectors: F32  # n_users × factors
    has_profile_vector: npt.NDArray[np.bool_]
    arrival_ms: IntArray | None = None  # when each item enters the catalogue (None: all before the replay)
    summary: dict[str, int] = field(default_factory=dict)
    _neighbours: dict[int, tuple[IntArray, F64]] = field(default_factory=dict, repr=False)

    def content_neighbours(self, item: int) -> tuple[IntArray, F64]:
        """The item's ``neighbours_top_n`` most cosine-similar items by content (none without a record)."""
        hit = self._neighbours.get(item)
        if hit is None:
            if not self.has_record[item]:
                hit = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
            else:
                best, scores = cosine_top(self.item_rows, item, self.cfg.neighbours_top_n, self.has_record)
                hit = (best, scores.astype(np.float64))
            self._neighbours[item] = hit
        return hit

    def listed(self, now_ms: int) -> npt.NDArray[np.bool_]:
        """Which items are in the catalogue at ``now_ms``."""
        return self.has_record if self.arrival_ms is None else self.has_record & (self.arrival_ms <= now_ms)

    def arrivals(self, history: IntArray, now_ms: int, n: int) -> Signal:
        """:func:`content_signal` over the listed items with a content vector (items the model does not know)."""
        new = np.flatnonzero(self.has_content_vector & self.listed(now_ms))
        return content_signal(self.item_rows, new, history, n)

    def with_content_neighbours(self, base: Neighbours) -> Neighbours:
        """``base`` (co-visitation), with content neighbours for an item that has none, as the API does."""
        if not self.cfg.content_neighbours:
            return base

        def neighbours(item: int) -> tuple[IntArray, F64]:
            got = base(item)
            return got if len(got[0]) else self.content_neighbours(item)
        return neighbours

    def user_vector(self, user: int, vec: F32 | None, events: int) -> F32 | None:
        """``vec`` blended with the user's profile vector, by :func:`models.ridge.fade_weight` of ``events``
        (the profile alone for a user without a vector): what the API scores with."""
        if not self.has_profile_vector[user]:
            return vec
        weight = fade_weight(events, self.cfg.profile_fade_events)
        if weight <= 0:
            return vec
        profile = self.user_vectors[user]
        return profile if vec is None else ((1.0 - weight) * vec + weight * profile).astype(np.float32)


def _regression(records: Sequence[Record | None], cfg: ContentConfig, targets: F32, known: npt.NDArray[np.bool_],
                support: npt.NDArray[np.int64], min_support: int, alpha: float, every_row: bool = False
                ) -> tuple[F32, npt.NDArray[np.bool_], sp.csr_matrix, npt.NDArray[np.bool_], int]:
    """Fit on the rows with a record, a vector and ``support >= min_support``; predict every unknown row with a
    record (``every_row``: every row with a record). Returns (vectors, which rows got one, unit feature rows,
    which rows have a record, examples)."""
    n, factors = targets.shape
    have = np.array([r is not None for r in records], dtype=bool)
    rows_of = np.flatnonzero(have)
    vectors = np.zeros((n, factors), dtype=np.float32)
    predicted = np.zeros(n, dtype=bool)
    if not len(rows_of):
        return vectors, predicted, sp.csr_matrix((n, 0), dtype=np.float32), have, 0
    train = [r for r, i in enumerate(rows_of.tolist()) if known[i] and support[i] >= min_support]
    part = fit_part([records[i] or {} for i in rows_of.tolist()], cfg, targets, train,
                    [int(rows_of[r]) for r in train], alpha)
    scatter = sp.csr_matrix((np.ones(len(rows_of), dtype=np.float32), (rows_of, np.arange(len(rows_of)))),
                            shape=(n, len(rows_of)))
    full = sp.csr_matrix(scatter @ part.rows, dtype=np.float32)  # each record's row at its dense index
    cold = rows_of if every_row else rows_of[~known[rows_of]]
    if part.ridge is not None and len(cold):
        vectors[cold] = part.ridge.predict(full[cold])
        predicted[cold] = np.isfinite(vectors[cold]).all(axis=1)
    return vectors, predicted, normalized_rows(full), have, len(train)


def replay_cold_start(item_records: Sequence[Record | None], user_records: Sequence[Record | None],
                      item_factors: F32, known_items: npt.NDArray[np.bool_], users_per_item: IntArray,
                      user_factors: F32, known_users: npt.NDArray[np.bool_], items_per_user: IntArray,
                      cfg: ColdStartConfig, arrival_ms: IntArray | None = None) -> ColdStart:
    """The cold-start state of a model fitted on a log (``*_records`` per dense index, None without one):
    the item regression trained on items with ``content_min_interactions`` interacting users and predicting
    the items the model does not know (the refit's cold vectors), the profile regression trained on users with
    ``profile_min_interactions`` items and predicting every profiled user, as the refit and the API do.
    ``arrival_ms`` says when each item enters the catalogue (its vector and features are used from then)."""
    iv, ihas, rows, irec, itrain = _regression(item_records, cfg.items, item_factors, known_items, users_per_item,
                                               cfg.content_min_interactions, cfg.content_ridge_alpha)
    # every profiled user gets the profile's vector: the API blends it in while they have few events
    uv, uhas, _, urec, utrain = _regression(user_records, cfg.profiles, user_factors, known_users, items_per_user,
                                            cfg.profile_min_interactions, cfg.profile_ridge_alpha, every_row=True)
    summary = {"items_with_content": int(irec.sum()), "content_training_items": itrain,
               "content_vectors": int(ihas.sum()), "users_with_profile": int(urec.sum()),
               "profile_training_users": utrain, "profile_vectors": int(uhas.sum())}
    return ColdStart(cfg, iv, ihas, rows, irec, uv, uhas, arrival_ms, summary)
