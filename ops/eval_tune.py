"""The validation search of `streamrec eval`: every method tunes its own parameters on the validation window.

Grids are the method's, never a dataset's (the same command runs on logs we have never seen):

1. one replay without a model scores every trending window, popularity half-life and "buy again"
   half-life;
2. co-visitation: a coordinate search (half-life, previous items, window, reverse weight), each
   coordinate one replay holding one table per value, each table read with a few session sizes;
3. ALS: alpha, then the half-life of the training weights, scored by the streaming fold-in;
4. the hybrid: one replay with the chosen signals captures every query's candidate features (on a
   larger sample of the window: a learned ranker needs many queries), then
   :func:`models.blend_tuning.tune_blend` learns the blend weights from them, and
   :func:`models.learned_ranker.fit_ranker` a LightGBM lambdarank on the sources plus the user's history
   features; the ranker is kept only when it beats the tuned blend on the newest fifth of the queries
   (held out from its fit; the blend saw them, so the comparison favours the blend).

Only the validation window is replayed here; the test window is never looked at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from models import evaluation as ev
from models.blend_tuning import feature_set, ndcg, tune_blend
from models.cold_start import ColdStart
from models.covisitation import CovisConfig
from models.eventlog import BatchModel, EventLog, IntArray
from models.hybrid_replay import (
    Answer,
    MethodConfig,
    als_answer,
    covis_answer,
    frequency_answer,
    hybrid_answer,
    popular_answer,
    replay_answers,
    trending_answer,
)
from models.learned_ranker import LearnedRanker, fit_ranker
from models.learned_ranker import Query as RankerQuery
from models.ranking import SOURCES, RankingConfig
from models.signal_state import SignalState
from models.training import ALSParams

H, D = 3_600.0, 86_400.0
TRENDING = ((60, 30, 5.0), (60, 60, 30.0), (600, 36, 6.0), (3600, 24, 12.0), (86400, 7, 3.5), (86400, 28, 14.0))
POPULAR_HALF_LIVES = (None, H, D, 7 * D, 30 * D)
FREQUENCY_HALF_LIVES = (H, D, 7 * D, 30 * D, 90 * D, 365 * D, None)
COVIS_GRID: dict[str, tuple[Any, ...]] = {"half_life_s": (H, 6 * H, D, 7 * D, 30 * D), "max_prev": (1, 3, 10, 20),
                                          "window_s": (600.0, H, D), "backward_weight": (0.0, 0.5, 1.0)}
SESSIONS = ((1, 1.0), (3, 0.5), (10, 0.9))
ALPHAS = (0.5, 2.0, 10.0, 40.0)
WEIGHT_HALF_LIVES_D: tuple[float | None, ...] = (None, 1.0, 30.0)
Say = Callable[[str], None]


@dataclass
class Window:
    """The validation window of a log, its sampled queries and its settings."""

    log: EventLog
    lo: int
    hi: int
    queries: IntArray
    users: IntArray
    relevant: list[IntArray]
    rcfg: ev.ReplayConfig
    say: Say

    def run(self, state: SignalState, trending: tuple[ev.TrendingConfig, ...], methods: dict[str, Answer],
            model: BatchModel | None = None, cold: ColdStart | None = None) -> dict[str, float]:
        """NDCG@k of each method over the window's queries (``cold``: with cold start, for content methods)."""
        res = replay_answers(self.log, self.lo, self.hi, self.queries, self.users, self.relevant,
                             ev.catalogue(self.log, self.hi), state, trending, model, self.rcfg, methods, cold=cold)
        return {m: v[f"ndcg@{self.rcfg.k}"] for m, v in res.metrics(self.rcfg.k).items()}


def _label(value: Any) -> str:
    return "none" if value is None else f"{value:g}"


def tune_simple(w: Window) -> tuple[ev.TrendingConfig, float | None, float | None, dict[str, Any]]:
    """Trending window, popularity half-life and "buy again" half-life, in one replay without a model."""
    trend = tuple(ev.TrendingConfig(*t) for t in TRENDING)
    state = SignalState(w.log, w.lo, w.hi, (), POPULAR_HALF_LIVES)
    methods = {f"trending {t.label}": trending_answer(i) for i, t in enumerate(trend)}
    methods |= {f"popular {_label(h)}": popular_answer(i) for i, h in enumerate(POPULAR_HALF_LIVES)}
    methods |= {f"frequency {_label(h)}": frequency_answer(h) for h in FREQUENCY_HALF_LIVES}
    scores = w.run(state, trend, methods)
    best_t = max(range(len(trend)), key=lambda i: scores[f"trending {trend[i].label}"])
    best_p = max(POPULAR_HALF_LIVES, key=lambda h: scores[f"popular {_label(h)}"])
    best_f = max(FREQUENCY_HALF_LIVES, key=lambda h: scores[f"frequency {_label(h)}"])
    w.say(f"chosen trending {trend[best_t].label}, popular half-life {_label(best_p)} s, "
          f"buy-again half-life {_label(best_f)} s")
    return trend[best_t], best_p, best_f, scores


def tune_covis(w: Window, trending: ev.TrendingConfig, popular: float | None, start: CovisConfig
               ) -> tuple[CovisConfig, tuple[int, float], dict[str, float]]:
    """Coordinate search over :data:`COVIS_GRID`; each coordinate is one replay with one table per value."""
    current, session = start, SESSIONS[1]
    tried: dict[str, float] = {}
    for name, values in COVIS_GRID.items():
        cfgs = [replace(current, **{name: v}) for v in values]
        state = SignalState(w.log, w.lo, w.hi, cfgs, (popular,))
        methods = {f"{i}|{n}|{d}": covis_answer(i, n, d) for i in range(len(cfgs)) for n, d in SESSIONS}
        scores = w.run(state, (trending,), methods)
        best = max(scores, key=lambda key: scores[key])
        i, n, d = best.split("|")
        current, session = cfgs[int(i)], (int(n), float(d))
        tried |= {f"{name}={_label(values[int(key.split('|')[0])])} session={key.split('|', 1)[1]}": s
                  for key, s in scores.items()}
        w.say(f"co-visitation {name}: chosen {_label(getattr(current, name))} (NDCG {scores[best]:.4f})")
    return current, session, tried


def _params(p: dict[str, Any]) -> ALSParams:
    return ALSParams(factors=int(p["factors"]), regularization=float(p["regularization"]), alpha=float(p["alpha"]),
                     iterations=int(p["iterations"]))


def half_life_s(p: dict[str, Any]) -> float | None:
    """The ALS training weights' half-life in seconds (None: no decay)."""
    return None if p["half_life_days"] is None else float(p["half_life_days"]) * D


def fit(log: EventLog, stop: int, p: dict[str, Any]) -> BatchModel:
    """Implicit ALS on the events before ``stop`` with the parameters ``p``."""
    return ev.fit_batch(log, stop, _params(p), half_life_s(p))


def tune_als(w: Window, trending: ev.TrendingConfig, start: dict[str, Any]
             ) -> tuple[dict[str, Any], BatchModel, dict[str, float]]:
    """Alpha, then the training weights' half-life, scored by the streaming fold-in's NDCG."""
    current: dict[str, Any] = dict(start)
    tried: dict[str, float] = {}
    models: dict[str, BatchModel] = {}
    for name, values in (("alpha", ALPHAS), ("half_life_days", WEIGHT_HALF_LIVES_D)):
        for v in values:
            p = {**current, name: v}
            key = json.dumps(p, sort_keys=True)
            if key not in tried:
                model = fit(w.log, w.lo, p)
                state = SignalState(w.log, w.lo, w.hi, (), (None,))
                tried[key] = w.run(state, (trending,), {"als_streaming": als_answer(True)}, model)["als_streaming"]
                models[key] = model
                w.say(f"ALS {p}: streaming NDCG {tried[key]:.4f} (fit {model.fit_seconds:.0f} s)")
        current = max(({**current, name: v} for v in values), key=lambda p: tried[json.dumps(p, sort_keys=True)])
    best = json.dumps(current, sort_keys=True)
    return current, models[best], tried


Captured = list[tuple[IntArray, np.ndarray]]


ColdFor = Callable[[BatchModel], ColdStart]


def tune_hybrid(w: Window, mc: MethodConfig, model: BatchModel, start: RankingConfig, learn_ranker: bool = True,
                cold_for: ColdFor | None = None) -> tuple[RankingConfig, LearnedRanker | None, dict[str, Any]]:
    """Capture the hybrid's candidate features on ``w``, learn the blend weights, then try a learned ranker;
    with ``cold_for`` (the cold-start state of a model) in the world with cold start, so the content sources
    get their weights too."""
    base = replace(start, exclude_seen=w.rcfg.exclude_seen, session_items=mc.session_items,
                   session_decay=mc.session_decay, repeat_half_life_s=mc.frequency_half_life_s)
    captured: Captured = []
    state = SignalState(w.log, w.lo, w.hi, (mc.covis,), (mc.popular_half_life_s,))
    cold = cold_for(model) if cold_for is not None else None
    answer = hybrid_answer(base, capture=captured, content=cold is not None)
    before = w.run(state, (mc.trending,), {"hybrid": answer}, model, cold)["hybrid"]
    blend = [(c, f[:, : len(SOURCES)].astype(np.float64)) for c, f in captured]
    weights, score, how = tune_blend(feature_set(blend, w.relevant), w.rcfg.k, base.weights())
    learned: dict[str, Any] = {n: round(float(v), 4) for n, v in zip(SOURCES, weights, strict=True)}
    chosen = replace(base, **learned)
    w.say(f"hybrid weights by {how}: {dict(zip(SOURCES, chosen.weights().tolist(), strict=True))} "
          f"(validation NDCG {before:.4f} at the starting weights, {score:.4f} learned)")
    record: dict[str, Any] = {"start_ndcg": before, "learned_ndcg": score, "how": how}
    ranker = None
    if learn_ranker:
        ranker, record["ranker"] = _try_ranker(w, captured, chosen.weights())
    return chosen, ranker, record


def _try_ranker(w: Window, captured: Captured, weights: np.ndarray) -> tuple[LearnedRanker | None, dict[str, Any]]:
    """Fit the lambdarank on the older four fifths; keep it if it beats the blend on the newest fifth."""
    k = w.rcfg.k
    queries = [RankerQuery(f.astype(np.float64), np.isin(c, rel)) for (c, f), rel in zip(captured, w.relevant,
                                                                                       strict=True)]
    cut = int(len(queries) * 0.8)
    try:
        ranker = fit_ranker(queries[:cut], k, seed=0)
    except ValueError as exc:
        w.say(f"learned ranker: not fitted ({exc})")
        return None, {"used": False, "reason": str(exc)}
    held = captured[cut:], w.relevant[cut:]
    scored = [(c, ranker.score(f.astype(np.float64))[:, None]) for c, f in held[0]]
    ranker_ndcg = ndcg(feature_set(scored, held[1]), [1.0], k)
    blend_ndcg = ndcg(feature_set([(c, f[:, : len(SOURCES)]) for c, f in held[0]], held[1]), weights, k)
    used = ranker_ndcg > blend_ndcg
    w.say(f"learned ranker ({ranker.iterations} trees, {cut:,} queries): held-out validation NDCG "
          f"{ranker_ndcg:.4f} vs the blend's {blend_ndcg:.4f}: {'used' if used else 'not used'}")
    info = {"used": used, "iterations": ranker.iterations, "fit_queries": cut, "holdout_queries": len(held[1]),
            "holdout_ndcg": ranker_ndcg, "blend_holdout_ndcg": blend_ndcg}
    return (ranker if used else None), info


def tune(w: Window, als_start: dict[str, Any], hybrid_start: RankingConfig, hybrid_window: Window | None = None,
         learn_ranker: bool = True, cold_for: ColdFor | None = None
         ) -> tuple[MethodConfig, dict[str, Any], dict[str, Any]]:
    """Every method's parameters chosen on the validation window (the hybrid's weights and ranker on
    ``hybrid_window``, a larger sample of it, when given); returns them, the ALS params and a log."""
    trending, popular, freq, simple = tune_simple(w)
    covis, (n, d), covis_tried = tune_covis(w, trending, popular, CovisConfig())
    als, model, als_tried = tune_als(w, trending, als_start)
    mc = MethodConfig(trending, popular, freq, covis, n, d, hybrid_start)
    hybrid, ranker, blend = tune_hybrid(hybrid_window or w, mc, model, hybrid_start, learn_ranker, cold_for)
    mc = replace(mc, hybrid=hybrid, ranker=ranker)
    record = {"simple": simple, "covisitation": covis_tried, "als": als_tried, "blend": blend,
              "covis_config": asdict(covis)}
    return mc, als, record
