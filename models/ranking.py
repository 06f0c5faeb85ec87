"""The one ranking core: candidate sources → per-candidate features → a weighted blend → top k.

Sources (:data:`SOURCES`), each a :class:`Signal` of candidate items and raw scores:

* ``personal``: ALS scores of the user's vector against the item factors (:func:`personal_signal`);
* ``covisitation``: neighbours of the session's last items (:func:`covisitation_signal`);
* ``repeat``: the user's decayed frequency per item (:func:`models.profile.repeat_profile`);
* ``trending`` and ``popular``: the shop-wide lists;
* ``content``: items new since the refit whose catalogue content is most like the user's history ("new
  arrivals like what you buy", :func:`models.cold_start.content_signal`; only with a content model).

:func:`candidate_features` drops blocked items (and, with ``exclude_seen``, the user's seen ones),
keeps each source's best ``candidates`` with a positive score and divides them by that source's
best score, so every feature lies in (0, 1] and the best recommendable item of a source scores 1
(as the API has always normalised); ``content`` scores are mean cosines, in [0, 1] already, and stay
as they are (:data:`ABSOLUTE`). :func:`rank` scores ``Σ_s weight_s · feature_s``, orders by
score (ties to the lower item index) and names each item's ``source``: the signal with the largest
weighted term. The API and the offline evaluation both call :func:`rank`; the weights come from
:class:`RankingConfig` (settings ``STREAMREC_RANK_*``). With ``arrival_slots`` the list's last positions
go to the best ``content`` candidates (scoring at least ``arrival_min_score``) that the blend left out, so
new products are seen before they have the interactions every other source needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from models.intsets import distinct, union
from models.profile import Session, session
from models.rank_features import candidate_item_stats, history_features

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
SOURCES = ("personal", "covisitation", "repeat", "trending", "popular", "content")
CONTENT = SOURCES.index("content")
DAY_S = 86_400.0


@dataclass(frozen=True)
class RankingConfig:
    """Blend weights per source and the read-time parameters of the signals (settings ``STREAMREC_RANK_*``)."""

    personal: float = 1.0
    covisitation: float = 1.0
    repeat: float = 1.0
    trending: float = 0.3
    popular: float = 0.05
    content: float = 0.5
    candidates: int = 100
    exclude_seen: bool = True
    session_items: int = 3
    session_decay: float = 0.5
    repeat_half_life_s: float | None = 7 * DAY_S
    arrival_slots: int = 0  # the list's last positions kept for the best ``content`` candidates (new arrivals)
    arrival_min_score: float = 0.0  # ... whose content score (a mean cosine) is at least this
    ranker_min_history: int = 0  # users with fewer history entries are ordered by the blend, not the ranker

    def weights(self) -> F64:
        """The blend weights in :data:`SOURCES` order."""
        return np.array([self.personal, self.covisitation, self.repeat, self.trending, self.popular, self.content],
                        dtype=np.float64)


@dataclass(frozen=True)
class Signal:
    """Candidate items of one source and their raw scores (any scale; only positive scores count)."""

    idx: IntArray
    score: F64

    @staticmethod
    def empty() -> Signal:
        return Signal(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))


def _empty() -> IntArray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RankingInputs:
    """Everything :func:`rank` needs about one request: the signals, the seen and the blocked items, and
    the user's history (items and timestamps, oldest first) at ``now_ms`` for a learned ranker's features."""

    signals: Mapping[str, Signal]
    seen: IntArray = field(default_factory=_empty)
    blocked: IntArray = field(default_factory=_empty)
    history_items: IntArray = field(default_factory=_empty)
    history_ts_ms: IntArray = field(default_factory=_empty)
    now_ms: int = 0
    item_stats: F64 | None = None  # models.rank_features.item_stats of the model's items (index < len)


class Scorer(Protocol):
    """A learned ranker (:class:`models.learned_ranker.LearnedRanker`): one score per feature row."""

    def score(self, x: npt.ArrayLike) -> F64: ...


@dataclass(frozen=True)
class Ranking:
    """Ranked items (best first), their blended scores and the dominant source of each."""

    items: IntArray
    scores: F64
    sources: list[str]


def top_signal(scores: npt.ArrayLike, n: int, drop: IntArray | None = None) -> Signal:
    """The ``n`` best positive, finite entries of a dense score array (``drop``ped positions skipped)."""
    s = np.array(scores, dtype=np.float64)
    if drop is not None and len(drop):
        s[drop] = -np.inf
    s[~np.isfinite(s)] = -np.inf
    n = min(n, len(s))
    if n <= 0:
        return Signal.empty()
    part = np.argpartition(-s, n - 1)[:n] if n < len(s) else np.arange(len(s))
    part = part[s[part] > 0]
    order = np.lexsort((part, -s[part]))
    return Signal(part[order].astype(np.int64), s[part[order]])


def personal_signal(user_vec: npt.ArrayLike, item_factors: npt.NDArray[np.floating], n: int,
                    usable: npt.NDArray[np.bool_] | None = None, drop: IntArray | None = None) -> Signal:
    """ALS scores ``item_factors · user_vec``: the best ``n`` usable items (items with a vector)."""
    scores = (item_factors @ np.asarray(user_vec, dtype=item_factors.dtype)).astype(np.float64)
    if usable is not None:
        scores[~usable] = -np.inf
    return top_signal(scores, n, drop)


def covisitation_signal(sess: Session, neighbours: Callable[[int], tuple[IntArray, F64]]) -> Signal:
    """``Σ_i weight_i · row_i / Σ row_i`` over the session's items: each row is a distribution of next items."""
    idx, val = [], []
    for item, w in zip(sess.items.tolist(), sess.weights.tolist(), strict=True):
        nb, score = neighbours(item)
        total = float(score.sum())
        if total > 0:
            idx.append(nb)
            val.append(score * (w / total))
    if not idx:
        return Signal.empty()
    uniq, inv = np.unique(np.concatenate(idx), return_inverse=True)
    return Signal(uniq, np.bincount(inv, weights=np.concatenate(val), minlength=len(uniq)).astype(np.float64))


ABSOLUTE = frozenset({"content"})  # sources scored on [0, 1] already (a mean cosine): kept as they are


def _source_top(sig: Signal, drop: IntArray, n: int, absolute: bool = False) -> tuple[IntArray, F64]:
    """A source's best ``n`` positive candidates outside ``drop`` (sorted, unique), divided by their best score
    (``absolute``: as they are; a source with a few weak candidates must not make its best one a 1)."""
    keep = (sig.score > 0) & np.isfinite(sig.score)
    if len(drop) and len(sig.idx):  # binary search in the sorted drop: a fraction of np.isin's cost per call
        at = np.minimum(np.searchsorted(drop, sig.idx), len(drop) - 1)
        keep &= drop[at] != sig.idx
    idx, score = sig.idx[keep], sig.score[keep]
    if len(idx) > n:
        order = np.lexsort((idx, -score))[:n]
        idx, score = idx[order], score[order]
    return idx, (score / score.max() if len(score) and not absolute else score)


def candidate_features(inputs: RankingInputs, cfg: RankingConfig) -> tuple[IntArray, F64]:
    """The candidates (ascending item index) and their features, one column per source in SOURCES order."""
    drop = union(inputs.blocked, inputs.seen) if cfg.exclude_seen else distinct(inputs.blocked)
    parts = [_source_top(inputs.signals[s], drop.astype(np.int64), cfg.candidates, s in ABSOLUTE)
             if s in inputs.signals
             else (np.zeros(0, dtype=np.int64), np.zeros(0)) for s in SOURCES]
    cand = union(*(p[0] for p in parts))
    feats = np.zeros((len(cand), len(SOURCES)), dtype=np.float64)
    for col, (idx, val) in enumerate(parts):
        feats[np.searchsorted(cand, idx), col] = val
    return cand.astype(np.int64), feats


def ranker_rows(inputs: RankingInputs, cand: IntArray, feats: F64) -> F64:
    """A learned ranker's feature rows: the source features, the user's history features and the item's
    statistics per candidate (columns :data:`models.learned_ranker.FEATURES`)."""
    return np.hstack([feats, history_features(cand, inputs.history_items, inputs.history_ts_ms, inputs.now_ms),
                      candidate_item_stats(cand, inputs.item_stats)])


def rank(inputs: RankingInputs, cfg: RankingConfig, k: int, ranker: Scorer | None = None) -> Ranking:
    """The top ``k`` candidates by ``features · weights`` (or by ``ranker``'s score of :func:`ranker_rows`),
    best first, ties to the lower item index. The dominant source is the largest weighted term; with a
    ranker, which weighs sources its own way, the largest normalised feature (where the item ranks best)."""
    cand, feats = candidate_features(inputs, cfg)
    # A user with less history than ``ranker_min_history`` is ordered by the blend: where the ranker learnt
    # from users with a history, its history columns are all zero for them (see docs/evaluation.md).
    if ranker is None or len(inputs.history_items) < cfg.ranker_min_history:
        terms = feats * cfg.weights()
        score = terms.sum(axis=1)
    else:
        terms, score = feats, ranker.score(ranker_rows(inputs, cand, feats))
    order, placed = _with_arrivals(np.lexsort((cand, -score)), feats[:, CONTENT], k, cfg.arrival_slots,
                                   cfg.arrival_min_score)
    dominant = np.argmax(terms[order], axis=1) if len(order) else np.zeros(0, dtype=np.int64)
    sources = [SOURCES[d] for d in dominant.tolist()]
    sources[len(sources) - placed:] = ["content"] * placed  # a kept slot is there for what the item is
    return Ranking(cand[order], score[order], sources)


def _with_arrivals(order: IntArray, content: F64, k: int, slots: int, min_score: float) -> tuple[IntArray, int]:
    """The first ``k`` of ``order`` (candidate positions, best first), the last ``slots`` of them given to the
    best ``content`` candidates (new arrivals like the user's history, scoring above 0 and at least
    ``min_score``) that did not make the first ``k - slots`` by score: a shop's new products get seen before
    they have the interactions every other source needs. A slot no arrival fills keeps the next item by score.
    Returns the order and how many arrivals end it."""
    k = max(k, 0)
    slots = min(max(slots, 0), k)
    if not slots:
        return order[:k], 0
    rest = order[k - slots:]
    arrivals = rest[(content[rest] > 0) & (content[rest] >= min_score)]
    if not len(arrivals):
        return order[:k], 0
    arrivals = arrivals[np.argsort(-content[arrivals], kind="stable")][:slots]
    fill = rest[~np.isin(rest, arrivals)][: slots - len(arrivals)]
    return np.concatenate([order[: k - slots], fill, arrivals]).astype(np.int64), len(arrivals)


@dataclass(frozen=True)
class UserState:
    """One user's state as the worker keeps it: vector, history (oldest first), repeat profile."""

    vector: npt.NDArray[np.floating] | None
    items: IntArray
    ts_ms: IntArray
    repeat: Signal  # decayed frequency per item (stored units or true scores: only the order matters)


def build_inputs(user: UserState, now_ms: int, item_factors: npt.NDArray[np.floating] | None,
                 usable: npt.NDArray[np.bool_] | None, neighbours: Callable[[int], tuple[IntArray, F64]],
                 shop: Mapping[str, Signal], seen: IntArray, cfg: RankingConfig,
                 blocked: IntArray | None = None, item_stats: F64 | None = None,
                 content: Signal | None = None) -> RankingInputs:
    """The :class:`RankingInputs` of one request: personal, co-visitation and repeat signals of the user
    plus the shop-wide ``trending`` and ``popular`` signals in ``shop`` (and the ``content`` signal when
    there is a content model)."""
    drop = union(seen, blocked if blocked is not None else []) if cfg.exclude_seen else blocked
    signals: dict[str, Signal] = {k: v for k, v in shop.items() if k in ("trending", "popular")}
    if content is not None:
        signals["content"] = content
    if user.vector is not None and item_factors is not None:
        signals["personal"] = personal_signal(user.vector, item_factors, cfg.candidates, usable,
                                              None if drop is None else drop.astype(np.int64))
    sess = session(user.items, user.ts_ms, now_ms, cfg.session_items, cfg.session_decay)
    signals["covisitation"] = covisitation_signal(sess, neighbours)
    signals["repeat"] = user.repeat
    return RankingInputs(signals, np.asarray(seen, dtype=np.int64),
                         _empty() if blocked is None else np.asarray(blocked, dtype=np.int64),
                         np.asarray(user.items, dtype=np.int64), np.asarray(user.ts_ms, dtype=np.int64), int(now_ms),
                         item_stats)


def with_signals(inputs: RankingInputs, signals: Mapping[str, Signal], blocked: IntArray,
                 item_stats: F64 | None = None) -> RankingInputs:
    """``inputs`` with other signals, blocked items and item statistics (the API adds its own personal
    signal, blocks and the served version's statistics)."""
    return replace(inputs, signals=signals, blocked=blocked, item_stats=item_stats)
