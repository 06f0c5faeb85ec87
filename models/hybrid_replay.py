"""Prequential replay of every method of issue 14 side by side, the hybrid through :func:`models.ranking.rank`.

Methods (names fixed): ``trending`` (the API's fallback: decayed windowed popularity, then all-time),
``popular`` (decayed all-time popularity), ``personal_frequency`` ("buy again": the user's own decayed
most frequent items), ``covisitation`` (neighbours of the user's last items), ``als_batch`` and
``als_streaming`` (:mod:`models.evaluation`'s batch and streaming fold-in), and ``hybrid`` (the
ranking core over all sources, exactly what the API serves). Every method but ``popular`` and the
hybrid fills a short list with the trending fallback. A method *answer* is a function of one query's
:class:`Query`; :func:`answers` builds them from a :class:`MethodConfig`, and the validation search
builds variants the same way. Pure numpy (no I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.cold_start import ColdStart, Neighbours
from models.covisitation import CovisConfig
from models.evaluation import Progress, ReplayResult, _fallback, _masked_scores, _personal
from models.eventlog import F32, BatchModel, EventLog, IntArray
from models.intsets import distinct
from models.learned_ranker import LearnedRanker
from models.ranking import (
    DAY_S,
    RankingConfig,
    RankingInputs,
    Scorer,
    Signal,
    UserState,
    build_inputs,
    candidate_features,
    rank,
    ranker_rows,
    top_signal,
)
from models.replay_state import ContentVectors, ReplayConfig, StreamingState, TrendingConfig, TrendingScores
from models.signal_state import SignalState, fill, ranked

METHODS = ("trending", "popular", "personal_frequency", "covisitation", "als_batch", "als_streaming", "hybrid")
WITHOUT_CONTENT = "hybrid_without_content"  # with cold start: the hybrid as it was, waiting for interactions


@dataclass(frozen=True)
class MethodConfig:
    """Each method's own parameters (chosen on validation); ``hybrid`` holds the blend's weights."""

    trending: TrendingConfig = field(default_factory=TrendingConfig)
    popular_half_life_s: float | None = None
    frequency_half_life_s: float | None = 7 * DAY_S
    covis: CovisConfig = field(default_factory=CovisConfig)
    session_items: int = 3
    session_decay: float = 0.5
    hybrid: RankingConfig = field(default_factory=RankingConfig)
    ranker: LearnedRanker | None = None  # the learned ranker the hybrid orders with, when it won on validation


@dataclass
class ContentReplay:
    """The replay's world with cold start: the worker's state with content vectors, and the content state."""

    stream: StreamingState
    cold: ColdStart


@dataclass
class Query:
    """One query's view of the state: the events before index ``j`` of user ``u``."""

    j: int
    u: int
    now: int
    k: int
    hist: IntArray
    seen: IntArray
    fb: IntArray
    state: SignalState
    trends: list[TrendingScores]
    model: BatchModel | None
    stream: StreamingState | None
    cap: int = 0  # the API's history cap (settings history_cap): what the hybrid sees of the history; 0: all
    content: ContentReplay | None = None
    cache: dict[str, F32 | None] = field(default_factory=dict)

    def vector(self) -> F32 | None:
        """The streaming worker's vector of the user now (fold-in of the history; None: no vector)."""
        if "vec" not in self.cache:
            self.cache["vec"] = None if self.stream is None else self.stream.user_vector(self.u, self.j)
        return self.cache["vec"]

    def content_vector(self) -> F32 | None:
        """The vector the API scores with under cold start: the fold-in against items' content vectors too,
        blended with the user's profile vector while they have few events."""
        c = self.content
        if c is None:
            return self.vector()
        if "cvec" not in self.cache:
            self.cache["cvec"] = c.cold.user_vector(self.u, c.stream.user_vector(self.u, self.j), len(self.hist))
        return self.cache["cvec"]


Answer = Callable[[Query], IntArray]


def trending_answer(which: int) -> Answer:
    """The trending fallback with the ``which``-th trending window."""
    return lambda q: q.fb if which == 0 else _fallback(q.trends[which].score, q.state.popular[0], q.seen, q.k)


def popular_answer(which: int) -> Answer:
    """The most popular items with the ``which``-th popularity half-life."""
    return lambda q: fill(q.state.popular_signal(which, q.k, q.seen).idx, np.zeros(0, dtype=np.int64), q.k)


def frequency_answer(half_life_s: float | None) -> Answer:
    """"Buy again": the user's items by decayed frequency, then the fallback."""
    return lambda q: fill(ranked(q.state.repeat_signal(q.hist, q.now, half_life_s), q.seen), q.fb, q.k)


def covis_answer(which: int, n_items: int, decay: float) -> Answer:
    """Co-visitation neighbours of the user's newest ``n_items`` items (``which``-th table), then the fallback."""
    return lambda q: fill(ranked(q.state.covis_signal(which, q.hist, q.now, n_items, decay), q.seen), q.fb, q.k)


def als_answer(streaming: bool) -> Answer:
    """ALS alone (batch vectors, or the streaming fold-in), the fallback for users without a vector."""
    def answer(q: Query) -> IntArray:
        if q.model is None or q.stream is None:
            return q.fb
        if streaming:
            scores = _masked_scores(q.vector(), q.stream.item_factors, q.stream.has_vec)
        else:
            vec = q.model.user_factors[q.u] if q.model.known_users[q.u] else None
            scores = _masked_scores(vec, q.model.item_factors, q.model.known_items)
        picked = _personal(scores, q.seen, q.k) if scores is not None else None
        return q.fb if picked is None else picked
    return answer


def hybrid_inputs(q: Query, cfg: RankingConfig, covis: int = 0, popular: int = 0, content: bool = False
                  ) -> RankingInputs:
    """The ranking inputs of one query, built by :func:`models.ranking.build_inputs` as the API builds them
    (with ``content``: item and profile vectors from metadata, content neighbours for items without
    co-visitation ones and the new arrivals like the user's history, as the API serves them once a
    catalogue and profiles are in)."""
    st, log = q.state, q.state.log
    drop = q.seen if cfg.exclude_seen else np.zeros(0, dtype=np.int64)
    n = cfg.candidates
    shop = {"trending": top_signal(q.trends[0].score, n, drop), "popular": st.popular_signal(popular, n, drop)}
    hist = q.hist[-q.cap:] if q.cap else q.hist  # the history the API reads (the worker keeps the newest cap)
    world = q.content if content else None
    vec = q.content_vector() if world is not None else q.vector()
    user = UserState(vec, log.item[hist], log.ts_ms[hist], st.repeat_signal(hist, q.now, cfg.repeat_half_life_s))
    stream = world.stream if world is not None else q.stream
    factors = stream.item_factors if stream is not None else None
    usable = stream.has_vec if stream is not None else None
    neighbours: Neighbours = st.covis[covis].table.neighbours
    arrivals = None
    if world is not None:
        neighbours = world.cold.with_content_neighbours(neighbours)
        arrivals = world.cold.arrivals(log.item[hist], q.now, n)
    return build_inputs(user, q.now, factors, usable, neighbours, shop, q.seen, cfg, item_stats=st.item_stats,
                        content=arrivals)


def hybrid_answer(cfg: RankingConfig, covis: int = 0, popular: int = 0,
                  capture: list[tuple[IntArray, np.ndarray]] | None = None, ranker: Scorer | None = None,
                  content: bool = False) -> Answer:
    """The hybrid: :func:`models.ranking.rank` over every source (ordered by ``ranker`` when given; with
    ``content``, cold start from metadata); ``capture`` collects each query's candidates and their
    :func:`models.ranking.ranker_rows` (float32)."""
    def answer(q: Query) -> IntArray:
        inputs = hybrid_inputs(q, cfg, covis, popular, content)
        if capture is not None:
            cand, feats = candidate_features(inputs, cfg)
            capture.append((cand, ranker_rows(inputs, cand, feats).astype(np.float32)))
        return fill(rank(inputs, cfg, q.k, ranker).items, np.zeros(0, dtype=np.int64), q.k)
    return answer


def answers(cfg: MethodConfig, with_model: bool, content: bool = False) -> dict[str, Answer]:
    """The named methods of :data:`METHODS` for one configuration (state: trending 0, popular 0, covis 0);
    with ``content`` the hybrid uses cold start and :data:`WITHOUT_CONTENT` is the hybrid without it."""
    out = {"trending": trending_answer(0), "popular": popular_answer(0),
           "personal_frequency": frequency_answer(cfg.frequency_half_life_s),
           "covisitation": covis_answer(0, cfg.session_items, cfg.session_decay)}
    if with_model:
        out |= {"als_batch": als_answer(False), "als_streaming": als_answer(True)}
    out["hybrid"] = hybrid_answer(cfg.hybrid, ranker=cfg.ranker, content=content)
    if content:
        out[WITHOUT_CONTENT] = hybrid_answer(cfg.hybrid, ranker=cfg.ranker)
    return out


def replay_answers(log: EventLog, start: int, stop: int, queries: IntArray, users: IntArray,
                   relevant: list[IntArray], n_catalogue: int, state: SignalState, trending: Sequence[TrendingConfig],
                   model: BatchModel | None, rcfg: ReplayConfig, methods: dict[str, Answer],
                   progress: Progress | None = None, cold: ColdStart | None = None) -> ReplayResult:
    """Answer every query (sorted by index, all >= ``start``) with every method; state = events before it.
    ``cold`` (with a model) adds the world with cold start that ``hybrid_answer(..., content=True)`` reads."""
    k, n = rcfg.k, len(queries)
    recs = {m: np.full((n, k), -1, dtype=np.int64) for m in methods}
    trends = [TrendingScores(t, log, start) for t in trending]
    stream = StreamingState(model, log, start, rcfg) if model is not None else None
    world = None
    if cold is not None and model is not None:
        vectors = ContentVectors(cold.item_vectors, cold.has_content_vector, cold.cfg.content_prior_interactions,
                                 cold.arrival_ms)
        world = ContentReplay(StreamingState(model, log, start, rcfg, vectors), cold)
    none = np.zeros(0, dtype=np.int64)
    for qi, (j, u) in enumerate(zip(queries.tolist(), users.tolist(), strict=True)):
        state.advance(j)
        for tr in trends:
            tr.advance(j, int(tr.bucket[j]))
        if stream is not None:
            stream.advance(int(log.ts_ms[j]))
        if world is not None:
            world.stream.advance(int(log.ts_ms[j]))
        hist = state.history(u, j)
        seen = distinct(log.item[hist[-rcfg.history_cap:]]) if rcfg.exclude_seen else none
        fb = _fallback(trends[0].score, state.popular[0], seen, k)
        q = Query(j, u, int(log.ts_ms[j]), k, hist, seen, fb, state, trends, model, stream, rcfg.history_cap, world)
        for name, answer in methods.items():
            recs[name][qi] = answer(q)
        if progress is not None and (qi + 1) % 5000 == 0:
            progress(f"replayed {qi + 1:,}/{n:,} queries")
    return ReplayResult(log.ts_ms[queries], users, relevant, recs, max(n_catalogue, 1))


__all__ = ["METHODS", "WITHOUT_CONTENT", "Answer", "ContentReplay", "MethodConfig", "Query", "Signal", "answers",
           "replay_answers"]
