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
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.foldin import fold_in_items, fold_in_users
from models.metrics import evaluate
from models.scoring import top_k
from models.training import ALSParams, train_als
from models.weighting import decay_factors, weighted_matrix

IntArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EventLog:
    """Time-ordered events as parallel arrays (``ts_ms`` ascending; dense user and item indices)."""

    ts_ms: IntArray
    user: IntArray
    item: IntArray
    weight: npt.NDArray[np.float32]
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        if not len(self.user) == len(self.item) == len(self.weight) == n:
            raise ValueError("ts_ms, user, item and weight must have the same length")
        if n and np.any(np.diff(self.ts_ms) < 0):
            raise ValueError("events must be sorted by ts_ms")
        for name, idx, size in (("user", self.user, self.n_users), ("item", self.item, self.n_items)):
            if n and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"{name} indices must lie in [0, {size})")

    def __len__(self) -> int:
        return len(self.ts_ms)

    def index_at(self, ts_ms: int) -> int:
        """Number of events strictly before ``ts_ms`` (the index where a window starting then begins)."""
        return int(np.searchsorted(self.ts_ms, ts_ms, side="left"))


def time_split(log: EventLog, boundaries_ms: Sequence[int]) -> list[tuple[int, int]]:
    """Index ranges ``[start, stop)`` of consecutive windows ``[b_i, b_{i+1})`` of event time.

    An event stamped exactly at a boundary belongs to the later window.
    """
    if any(b >= c for b, c in itertools.pairwise(boundaries_ms)):
        raise ValueError("boundaries must be strictly increasing")
    idx = [log.index_at(b) for b in boundaries_ms]
    return list(itertools.pairwise(idx))


def interaction_matrix(log: EventLog, start: int, stop: int, half_life_s: float | None = None) -> sp.csr_matrix:
    """n_users × n_items CSR of summed weights of events ``[start, stop)``, optionally decayed to the last one."""
    w = log.weight[start:stop].astype(np.float64)
    if half_life_s is not None and stop > start:
        w = w * decay_factors(log.ts_ms[start:stop], log.ts_ms[stop - 1], half_life_s)
    return weighted_matrix(log.user[start:stop], log.item[start:stop], w, shape=(log.n_users, log.n_items))


@dataclass
class BatchModel:
    """A model fitted on the events before a split, laid out over the log's full index space.

    Users and items without training events have zero rows and ``known_* = False``.
    """

    user_factors: F32
    item_factors: F32
    known_users: npt.NDArray[np.bool_]
    known_items: npt.NDArray[np.bool_]
    gram: F32
    user_gram: F32
    regularization: float
    alpha: float
    fit_seconds: float


def fit_batch(log: EventLog, stop: int, params: ALSParams, half_life_s: float | None = None) -> BatchModel:
    """Fit implicit ALS on events ``[0, stop)``; only users and items seen there get factors."""
    full = interaction_matrix(log, 0, stop, half_life_s)
    users = np.flatnonzero(np.diff(full.indptr) > 0)
    items = np.flatnonzero(np.bincount(full.indices, minlength=log.n_items) > 0)
    fit = train_als(full[users][:, items], params)
    user_f = np.zeros((log.n_users, fit.factors), dtype=np.float32)
    item_f = np.zeros((log.n_items, fit.factors), dtype=np.float32)
    user_f[users], item_f[items] = fit.user_factors, fit.item_factors
    known_u, known_i = np.zeros(log.n_users, dtype=bool), np.zeros(log.n_items, dtype=bool)
    known_u[users], known_i[items] = True, True
    return BatchModel(user_f, item_f, known_u, known_i, fit.gram, fit.user_gram, params.regularization,
                      params.alpha, fit.fit_seconds)


@dataclass(frozen=True)
class TrendingConfig:
    """A trending window like ``streamrec.store.trending.Window``: ``buckets`` buckets of ``bucket_s``."""

    bucket_s: int = 60
    buckets: int = 60
    half_life_buckets: float = 30.0

    @property
    def label(self) -> str:
        window, half = self.bucket_s * self.buckets, self.bucket_s * self.half_life_buckets
        return f"{_span(window)} window, half-life {_span(half)}"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class ReplayConfig:
    """What a replay computes; defaults mirror the product's settings."""

    k: int = 10
    exclude_seen: bool = True
    trending: tuple[TrendingConfig, ...] = (TrendingConfig(),)  # the first one also feeds fallbacks and blends
    blend_weights: tuple[float, ...] = (0.2,)
    trend_top: int = 200
    history_cap: int = 200
    new_item_min_interactions: int = 3
    refresh_s: float = 60.0
    fold_new_items: bool = True


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


class _Trending:
    """Incremental copy of the product's trending score, in units of 2^(bucket / half-life) to stay O(1)."""

    def __init__(self, cfg: TrendingConfig, log: EventLog, start: int) -> None:
        self.cfg, self.log = cfg, log
        self.bucket = log.ts_ms // (cfg.bucket_s * 1000)
        now = int(self.bucket[min(start, len(log) - 1)]) if len(log) else 0
        self.b0 = now
        self.score = np.zeros(log.n_items, dtype=np.float64)
        self.count = np.zeros(log.n_items, dtype=np.int64)
        self.applied = self.expired = int(np.searchsorted(self.bucket, now - cfg.buckets + 1))
        self.advance(start, now)

    def _contrib(self, lo: int, hi: int) -> npt.NDArray[np.float64]:
        rel = (self.bucket[lo:hi] - self.b0) / self.cfg.half_life_buckets
        return self.log.weight[lo:hi].astype(np.float64) * np.exp2(rel)

    def advance(self, upto: int, now_bucket: int) -> None:
        """Apply events ``[applied, upto)`` and drop those older than the window ending at ``now_bucket``."""
        if (now_bucket - self.b0) / self.cfg.half_life_buckets > 200:  # keep exp2 far from overflow
            self.score *= np.exp2((self.b0 - now_bucket) / self.cfg.half_life_buckets)
            self.b0 = now_bucket
        items = self.log.item
        if upto > self.applied:
            np.add.at(self.score, items[self.applied:upto], self._contrib(self.applied, upto))
            np.add.at(self.count, items[self.applied:upto], 1)
            self.applied = upto
        old = min(int(np.searchsorted(self.bucket, now_bucket - self.cfg.buckets + 1)), self.applied)
        if old > self.expired:
            gone = items[self.expired:old]
            np.subtract.at(self.score, gone, self._contrib(self.expired, old))
            np.subtract.at(self.count, gone, 1)
            self.score[gone[self.count[gone] == 0]] = 0.0  # no float residue for items that left the window
            self.expired = old


class _Segments:
    """Event indices grouped by a key (user or item), each group in time order."""

    def __init__(self, keys: IntArray, n: int) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=n))])

    def before(self, key: int, j: int, cap: int | None = None) -> IntArray:
        """Indices of ``key``'s events with index < ``j`` (the newest ``cap`` of them)."""
        seg = self.order[self.ptr[key]:self.ptr[key + 1]]
        n = int(np.searchsorted(seg, j))
        return seg[max(0, n - cap) if cap else 0:n]


class StreamingState:
    """The worker's view of the model: user vectors by exact fold-in, new items folded in periodically."""

    def __init__(self, model: BatchModel, log: EventLog, start: int, cfg: ReplayConfig) -> None:
        self.model, self.log, self.cfg = model, log, cfg
        self.users, self.items = _Segments(log.user, log.n_users), _Segments(log.item, log.n_items)
        self.item_factors = model.item_factors.copy()
        self.has_vec = model.known_items.copy()
        self.user_factors = model.user_factors.copy()
        self.start = self.done = start
        step = int(cfg.refresh_s * 1000)
        self._step = step
        self._next = (int(log.ts_ms[start]) // step + 1) * step if start < len(log) else 0

    def _histories(self, keys: IntArray, segs: _Segments, field_of: IntArray, j: int, usable: npt.NDArray[np.bool_]
                   ) -> sp.csr_matrix:
        """Rows of summed weights over the newest ``history_cap`` events (< j) of each key, usable columns only."""
        rows, cols, wts = [], [], []
        for r, key in enumerate(keys.tolist()):
            ev = segs.before(key, j, self.cfg.history_cap)
            ev = ev[usable[field_of[ev]]]
            rows.append(np.full(len(ev), r))
            cols.append(field_of[ev])
            wts.append(self.log.weight[ev])
        n_cols = len(usable)
        if not rows:
            return sp.csr_matrix((0, n_cols), dtype=np.float32)
        return weighted_matrix(np.concatenate(rows), np.concatenate(cols), np.concatenate(wts),
                               shape=(len(keys), n_cols))

    def advance(self, ts_ms: int) -> None:
        """Run every worker refresh whose boundary is at or before ``ts_ms`` (events before it applied)."""
        while self._next and self._next <= ts_ms:
            self._refresh(self.log.index_at(self._next))
            self._next += self._step

    def _refresh(self, stop: int) -> None:
        if stop <= self.done:
            return
        log, m = self.log, self.model
        users = np.unique(log.user[self.done:stop])
        hist = self._histories(users, self.users, log.item, stop, self.has_vec)
        self.user_factors[users] = fold_in_users(self.item_factors, m.gram, hist, m.regularization, m.alpha)
        if self.cfg.fold_new_items:
            items = np.unique(log.item[self.done:stop])
            items = items[~m.known_items[items]]
            counts = np.array([len(self.items.before(i, stop)) for i in items.tolist()], dtype=np.int64)
            items = items[counts >= self.cfg.new_item_min_interactions]
            if len(items):
                every_user = np.ones(log.n_users, dtype=bool)
                inter = self._histories(items, self.items, log.user, stop, every_user)
                self.item_factors[items] = fold_in_items(self.user_factors, m.user_gram, inter, m.regularization,
                                                         m.alpha)
                self.has_vec[items] = True
        self.done = stop

    def user_vector(self, user: int, j: int) -> F32 | None:
        """The vector the worker holds for ``user`` just before event ``j`` (None: no vector at all)."""
        if len(self.users.before(user, j)) == len(self.users.before(user, self.start)):
            return self.user_factors[user] if self.model.known_users[user] else None
        hist = self._histories(np.array([user]), self.users, self.log.item, j, self.has_vec)
        return fold_in_users(self.item_factors, self.model.gram, hist, self.model.regularization, self.model.alpha)[0]


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
    trendings = [_Trending(t, log, start) for t in cfg.trending]
    popular = np.bincount(log.item[:start], weights=log.weight[:start], minlength=log.n_items).astype(np.float64)
    stream = StreamingState(model, log, start, cfg) if model is not None else None
    segs = stream.users if stream is not None else _Segments(log.user, log.n_users)
    applied, none = start, np.zeros(0, dtype=np.int64)
    for q, (j, u) in enumerate(zip(queries.tolist(), users.tolist(), strict=True)):
        if j > applied:
            np.add.at(popular, log.item[applied:j], log.weight[applied:j])
            applied = j
        for tr in trendings:
            tr.advance(j, int(tr.bucket[j]))
        seen = np.unique(log.item[segs.before(u, j, cfg.history_cap)]) if cfg.exclude_seen else none
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


def _catalogue(log: EventLog, stop: int) -> int:
    return int(np.count_nonzero(np.bincount(log.item[:stop], minlength=log.n_items)))


def prequential(log: EventLog, start: int, stop: int, model: BatchModel | None, cfg: ReplayConfig,
                sample: int | None = None, seed: int = 0, progress: Progress | None = None) -> ReplayResult:
    """Prequential replay of events ``[start, stop)``: before each event, ask for its user's top k.

    A query is a (user, timestamp) group -- a basket's lines arrive together, so none of them is
    known before the others are asked for. Its relevant items are the group's items; with
    ``exclude_seen`` only those the user never had before (the others could not be recommended).
    Groups without relevant items are dropped; ``sample`` picks a fixed, seeded subset of the
    rest, but every event is applied to the state.
    """
    idx = np.arange(start, stop)
    ev = idx[np.lexsort((idx, log.ts_ms[start:stop], log.user[start:stop]))]
    u, t, items = log.user[ev], log.ts_ms[ev], log.item[ev]
    new_group = np.ones(len(ev), dtype=bool)
    new_group[1:] = (u[1:] != u[:-1]) | (t[1:] != t[:-1])
    gid = np.cumsum(new_group) - 1
    firsts = ev[new_group]
    keep = np.ones(len(ev), dtype=bool)
    if cfg.exclude_seen:
        pairs = log.user[:stop] * log.n_items + log.item[:stop]
        uniq, first_at = np.unique(pairs, return_index=True)
        keep = first_at[np.searchsorted(uniq, u * log.n_items + items)] >= firsts[gid]
    eligible = np.flatnonzero(np.bincount(gid[keep], minlength=len(firsts)) > 0)
    chosen = eligible[_sample(len(eligible), sample, seed)]
    chosen = chosen[np.argsort(firsts[chosen], kind="stable")]
    bounds = np.concatenate([np.flatnonzero(new_group), [len(ev)]])
    relevant = [np.unique(items[bounds[g]:bounds[g + 1]][keep[bounds[g]:bounds[g + 1]]]) for g in chosen.tolist()]
    if progress is not None:
        progress(f"prequential: {len(firsts):,} queries in the window, {len(eligible):,} with new items, "
                 f"{len(chosen):,} evaluated; {stop - start:,} events applied")
    return replay(log, start, firsts[chosen], log.user[firsts[chosen]], relevant, model, cfg, _catalogue(log, stop),
                  progress)


def next_window(log: EventLog, start: int, stop: int, model: BatchModel | None, cfg: ReplayConfig,
                sample: int | None = None, seed: int = 0, progress: Progress | None = None) -> ReplayResult:
    """Classic time-split evaluation: each user active in ``[start, stop)`` gets one top-k at ``start``.

    Relevant: the user's items in the window (with ``exclude_seen``, minus those in their history
    before ``start``). Streaming equals batch here: nothing is applied after ``start``.
    """
    active = np.unique(log.user[start:stop])
    active = active[_sample(len(active), sample, seed)]
    segs = _Segments(log.user, log.n_users)
    relevant, users = [], []
    for u in active.tolist():
        rel = np.unique(log.item[segs.before(u, stop)[len(segs.before(u, start)):]])
        if cfg.exclude_seen:
            rel = np.setdiff1d(rel, log.item[segs.before(u, start, cfg.history_cap)])
        if len(rel):
            relevant.append(rel)
            users.append(u)
    queries = np.full(len(users), start, dtype=np.int64)
    return replay(log, start, queries, np.array(users, dtype=np.int64), relevant, model, cfg,
                  _catalogue(log, stop), progress)
