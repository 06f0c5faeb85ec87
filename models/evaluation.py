"""Offline evaluation protocol: time splits and prequential replay over a time-ordered event log.

Pure numpy (no I/O). Events are ``(ts_ms, user, item, weight)`` rows sorted by time, users and items
dense indices. A replay *query* is ``(j, user)``: "what are this user's top k, given exactly the
events with index < j?" -- so nothing at or after index j can influence it. Queries are answered
for four families of methods, each a faithful model of what the product serves:

* ``trending``: the API's fallback -- decayed popularity over a sliding window of buckets exactly as
  ``streamrec.store.trending`` computes it (score = Σ weight · 0.5^(bucket age / half-life) over the
  last ``buckets`` buckets), then all-time popularity to fill the list;
* ``batch``: a model fitted once before the replay and never updated (its user vectors, its items);
  users without a vector, or whose best score is not positive, get ``trending``;
* ``streaming``: the same model, but a user with events since the fit gets the exact fold-in of
  their capped, weighted history (``models.foldin``), as the streaming worker writes it after every
  event; items new since the fit are folded in from their interactors' current vectors once they
  have ``new_item_min_interactions`` events, refreshed every ``refresh_s`` of event time (the
  worker's batches);
* ``blend``: the streaming scores blended with trending as ``online_api.service`` does:
  ``(1 - w)·s/max s + w·t/max t``, ``t`` the trending scores of the top ``trend_top`` items.

The building blocks live in :mod:`models.eventlog` (the log, time splits, the batch fit) and
:mod:`models.replay_state` (trending and streaming state); this module replays queries against them
and re-exports the whole protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.eventlog import F32, BatchModel, EventLog, IntArray, fit_batch, interaction_matrix, time_split
from models.intsets import distinct
from models.metrics import evaluate
from models.replay_state import ReplayConfig, Segments, StreamingState, TrendingConfig, TrendingScores
from models.scoring import top_k

__all__ = [
    "BatchModel",
    "EventLog",
    "ReplayConfig",
    "ReplayResult",
    "StreamingState",
    "TrendingConfig",
    "fit_batch",
    "interaction_matrix",
    "next_window",
    "prequential",
    "prequential_queries",
    "replay",
    "time_split",
]

Progress = Callable[[str], None]


@dataclass
class ReplayResult:
    """Per query: its time, user, relevant items and each method's top-k (padded with -1)."""

    ts_ms: IntArray
    users: IntArray
    relevant: list[IntArray]
    recs: dict[str, IntArray] = field(default_factory=dict)
    n_items: int = 1

    def metrics(self, k: int, where: npt.NDArray[np.bool_] | None = None) -> dict[str, dict[str, float]]:
        """``models.metrics.evaluate`` per method, over the queries selected by ``where`` (default all)."""
        pick = np.ones(len(self.relevant), dtype=bool) if where is None else where
        rel = [r for r, keep in zip(self.relevant, pick, strict=True) if keep]
        return {m: evaluate(list(r[pick]), rel, k, self.n_items) for m, r in self.recs.items()}

    def hits(self, method: str) -> npt.NDArray[np.bool_]:
        """Whether each query's top-k holds at least one relevant item."""
        return np.array([np.isin(r, rel).any() for r, rel in zip(self.recs[method], self.relevant, strict=True)])


def _fallback(trend: npt.NDArray[np.float64], popular: npt.NDArray[np.float64], seen: IntArray, k: int) -> IntArray:
    """The API's fallback: trending items (score > 0), then all-time popular ones, seen items skipped."""
    out = np.full(k, -1, dtype=np.int64)
    t = np.where(trend > 0, trend, -np.inf)
    t[seen] = -np.inf
    best = top_k(t, k)
    best = best[t[best] > -np.inf]
    out[: len(best)] = best
    if len(best) < k:
        p = np.where(popular > 0, popular, -np.inf)
        p[seen] = -np.inf
        p[best] = -np.inf
        more = top_k(p, k - len(best))
        more = more[p[more] > -np.inf]
        out[len(best): len(best) + len(more)] = more
    return out


def _personal(scores: F32, seen: IntArray, k: int, boost: tuple[IntArray, F32, float] | None = None
              ) -> IntArray | None:
    """Top-k by personal scores (non-candidates already -inf), blended as the API does; None: use fallback."""
    s = scores.copy()
    s[seen] = -np.inf  # masked before normalising, as the API does: the best *recommendable* item scores 1
    best_raw = float(s.max()) if len(s) else 0.0
    if not best_raw > 0:  # a zero vector ranks nothing: the API falls back too
        return None
    if boost is not None:
        idx, val, w = boost
        if w < 1:
            s[idx] += np.float32(w * best_raw / (1 - w)) * val  # same order as (1-w)·s/max s + w·t/max t
        else:
            s = np.where(np.isfinite(s), np.float32(0), np.float32(-np.inf))
            s[idx] = val
            s[seen] = -np.inf
    best = top_k(s, k)
    best = best[s[best] > -np.inf]
    out = np.full(k, -1, dtype=np.int64)
    out[: len(best)] = best
    return out


def _masked_scores(vec: F32 | None, factors: F32, candidates: npt.NDArray[np.bool_]) -> F32 | None:
    if vec is None:
        return None
    s = factors @ vec
    s[~candidates] = -np.inf
    return s


def _names(cfg: ReplayConfig) -> tuple[list[str], list[str]]:
    trend = ["trending" if len(cfg.trending) == 1 else f"trending[{t.label}]" for t in cfg.trending]
    blend = ["blend" if len(cfg.blend_weights) == 1 else f"blend[w={w:g}]" for w in cfg.blend_weights]
    return trend, blend


def replay(log: EventLog, start: int, queries: IntArray, users: IntArray, relevant: list[IntArray],
           model: BatchModel | None, cfg: ReplayConfig, n_catalogue: int, progress: Progress | None = None
           ) -> ReplayResult:
    """Answer each query ``(queries[q], users[q])`` (sorted by index, all >= ``start``) for every method.

    ``model`` was fitted on events before ``start``; without it only the trending methods run. The
    state at query q holds exactly the events with index < ``queries[q]``.
    """
    if len(queries) and (queries[0] < start or np.any(np.diff(queries) < 0)):
        raise ValueError("queries must be sorted and not before start")
    k, n = cfg.k, len(queries)
    trend_names, blend_names = _names(cfg)
    methods = trend_names + (["batch", "streaming", *blend_names] if model is not None else [])
    recs = {m: np.full((n, k), -1, dtype=np.int64) for m in methods}
    trendings = [TrendingScores(t, log, start) for t in cfg.trending]
    popular = np.bincount(log.item[:start], weights=log.weight[:start], minlength=log.n_items).astype(np.float64)
    stream = StreamingState(model, log, start, cfg) if model is not None else None
    segs = stream.users if stream is not None else Segments(log.user, log.n_users)
    applied, none = start, np.zeros(0, dtype=np.int64)
    for q, (j, u) in enumerate(zip(queries.tolist(), users.tolist(), strict=True)):
        if j > applied:
            np.add.at(popular, log.item[applied:j], log.weight[applied:j])
            applied = j
        for tr in trendings:
            tr.advance(j, int(tr.bucket[j]))
        seen = distinct(log.item[segs.before(u, j, cfg.history_cap)]) if cfg.exclude_seen else none
        fb = _fallback(trendings[0].score, popular, seen, k)
        for i, (name, tr) in enumerate(zip(trend_names, trendings, strict=True)):
            recs[name][q] = fb if i == 0 else _fallback(tr.score, popular, seen, k)
        if model is None or stream is None:
            continue
        stream.advance(int(log.ts_ms[j]))
        batch = _masked_scores(model.user_factors[u] if model.known_users[u] else None, model.item_factors,
                               model.known_items)
        picked = _personal(batch, seen, k) if batch is not None else None
        recs["batch"][q] = fb if picked is None else picked
        scores = _masked_scores(stream.user_vector(u, j), stream.item_factors, stream.has_vec)
        picked = _personal(scores, seen, k) if scores is not None else None
        recs["streaming"][q] = fb if picked is None else picked
        trend = trendings[0].score
        hot = top_k(np.where(trend > 0, trend, -np.inf), cfg.trend_top)
        hot = hot[trend[hot] > 0]
        top = float(trend[hot[0]]) if len(hot) else 1.0
        hot = hot[stream.has_vec[hot]]
        hot_val = (trend[hot] / top).astype(np.float32)
        for name, w in zip(blend_names, cfg.blend_weights, strict=True):
            picked = _personal(scores, seen, k, (hot, hot_val, w)) if scores is not None else None
            recs[name][q] = fb if picked is None else picked
        if progress is not None and (q + 1) % 5000 == 0:
            progress(f"replayed {q + 1:,}/{n:,} queries")
    return ReplayResult(log.ts_ms[queries], users, relevant, recs, max(n_catalogue, 1))


def _sample(n: int, sample: int | None, seed: int) -> IntArray:
    if sample is None or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def catalogue(log: EventLog, stop: int) -> int:
    """Items with at least one event before ``stop`` (the coverage denominator)."""
    return int(np.count_nonzero(np.bincount(log.item[:stop], minlength=log.n_items)))


def prequential_queries(log: EventLog, start: int, stop: int, exclude_seen: bool, sample: int | None = None,
                        seed: int = 0, progress: Progress | None = None) -> tuple[IntArray, IntArray, list[IntArray]]:
    """The queries of a prequential replay of ``[start, stop)``: (event index, user, relevant items) each.

    A query is a (user, timestamp) group -- a basket's lines arrive together, so none of them is
    known before the others are asked for. Its relevant items are the group's items; with
    ``exclude_seen`` only those the user never had before (the others could not be recommended).
    Groups without relevant items are dropped; ``sample`` picks a fixed, seeded subset of the rest.
    """
    idx = np.arange(start, stop)
    ev = idx[np.lexsort((idx, log.ts_ms[start:stop], log.user[start:stop]))]
    u, t, items = log.user[ev], log.ts_ms[ev], log.item[ev]
    new_group = np.ones(len(ev), dtype=bool)
    new_group[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1])
    gid = np.cumsum(new_group) - 1
    firsts = ev[new_group]
    keep = np.ones(len(ev), dtype=bool)
    if exclude_seen:
        pairs = log.user[:stop] * log.n_items + log.item[:stop]
        uniq, first_at = np.unique(pairs, return_index=True)
        keep = first_at[np.searchsorted(uniq, u * log.n_items + items)] >= firsts[gid]
    eligible = np.flatnonzero(np.bincount(gid[keep], minlength=len(firsts)) > 0)
    chosen = eligible[_sample(len(eligible), sample, seed)]
    chosen = chosen[np.argsort(firsts[chosen], kind="stable")]
    bounds = np.concatenate([np.flatnonzero(new_group), [len(ev)]])
    relevant = [distinct(items[bounds[g]:bounds[g + 1]][keep[bounds[g]:bounds[g + 1]]]) for g in chosen.tolist()]
    if progress is not None:
        progress(f"prequential: {len(firsts):,} queries in the window, {len(eligible):,} with new items, "
                 f"{len(chosen):,} evaluated; {stop - start:,} events applied")
    return firsts[chosen], log.user[firsts[chosen]], relevant


def prequential(log: EventLog, start: int, stop: int, model: BatchModel | None, cfg: ReplayConfig,
                sample: int | None = None, seed: int = 0, progress: Progress | None = None) -> ReplayResult:
    """Prequential replay of events ``[start, stop)``: before each event, ask for its user's top k.

    The queries are :func:`prequential_queries`'; every event is applied to the state.
    """
    queries, users, relevant = prequential_queries(log, start, stop, cfg.exclude_seen, sample, seed, progress)
    return replay(log, start, queries, users, relevant, model, cfg, catalogue(log, stop), progress)


def next_window(log: EventLog, start: int, stop: int, model: BatchModel | None, cfg: ReplayConfig,
                sample: int | None = None, seed: int = 0, progress: Progress | None = None) -> ReplayResult:
    """Classic time-split evaluation: each user active in ``[start, stop)`` gets one top-k at ``start``.

    Relevant: the user's items in the window (with ``exclude_seen``, minus those in their history
    before ``start``). Streaming equals batch here: nothing is applied after ``start``.
    """
    active = distinct(log.user[start:stop])
    active = active[_sample(len(active), sample, seed)]
    segs = Segments(log.user, log.n_users)
    relevant, users = [], []
    for u in active.tolist():
        rel = distinct(log.item[segs.before(u, stop)[len(segs.before(u, start)):]])
        if cfg.exclude_seen:
            rel = np.setdiff1d(rel, log.item[segs.before(u, start, cfg.history_cap)])
        if len(rel):
            relevant.append(rel)
            users.append(u)
    queries = np.full(len(users), start, dtype=np.int64)
    return replay(log, start, queries, np.array(users, dtype=np.int64), relevant, model, cfg,
                  catalogue(log, stop), progress)
