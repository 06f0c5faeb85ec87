"""The service layer behind the read endpoints: recommendations, similar items, explanations, trending.

Personal scores and trending are blended on comparable scales::

    final(i) = (1 - w) · s(i) / max_j s(j)  +  w · t(i) / max_j t(j)

with ``s = item_factors · user_vector`` (implicit-ALS predicted preference), ``t`` the decayed 1-hour
trending weight (0 outside the top 200) and ``w = settings.blend_weight``. Both terms lie in [0, 1], the
user's best personal item and the hottest item scoring 1 each; the normalisation makes ``w`` mean the same
for users with long and short histories. An item is labelled ``trending`` when its trending term is the
larger one, else ``personal``. Users without a vector get trending (1h) then all-time popular items.

With ``api_hybrid`` (the default) recommendations, session recommendations and similar items are served by
:mod:`online_api.hybrid_service` (every source ranked by :func:`models.ranking.rank`); the blend above is the
ALS-only path (``STREAMREC_API_HYBRID=false``), kept for comparison (``streamrec bench api --compare-als``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis.asyncio as aredis
from redis.commands.core import AsyncScript

from models.explain import explain as explain_scores
from models.weighting import weighted_matrix
from online_api.cache import ModelCache, View
from online_api.content import ContentService
from online_api.deadline import REDIS_TIMEOUT_S as REDIS_TIMEOUT_S  # re-exported
from online_api.deadline import redis_deadline as _redis_deadline
from online_api.errors import NotFound, Unavailable
from online_api.hybrid import Request
from online_api.hybrid_service import HybridRecommender
from online_api.metrics import ApiMetrics
from online_api.retrieval import blend_candidates
from online_api.schemas import (
    Contribution,
    Explanation,
    Ranked,
    RecommendationList,
    SimilarItems,
    Source,
    Trending,
    TrendingItem,
)
from online_api.topk import top_candidates as top_candidates  # re-exported
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import F32, RedisStore
from streamrec.store.trending import top_popular, top_trending
from streamrec.store.users import Interaction

PERSONAL, TRENDING = Source.PERSONAL, Source.TRENDING
LIST_TTL_S = 1.5  # per-category trending/popular lists are cached this long
# One round trip for everything a recommendation needs from Redis. The history is reduced to item ids
# joined by \x1e in Redis: parsing one string is far cheaper in Python than a list of 200 entries.
USER_STATE_LUA = """
local vec = redis.call('HGET', KEYS[1], ARGV[1])
local ts = redis.call('HGET', KEYS[2], ARGV[1])
local seen = ''
if ARGV[2] == '1' then
  local hist = redis.call('LRANGE', KEYS[3], 0, -1)
  local ids = {}
  for i, e in ipairs(hist) do
    local cut = string.find(e, '\\31', 1, true)
    ids[i] = cut and string.sub(e, 1, cut - 1) or e
  end
  seen = table.concat(ids, '\\30')
end
return {vec or false, ts or false, seen}
"""


def _interaction(raw: bytes | str) -> Interaction | None:
    """A history entry, or None when it is malformed (skipped rather than failing the request)."""
    try:
        return Interaction.decode(raw)
    except (ValueError, UnicodeDecodeError):
        return None


class Recommender:
    """Answers the read endpoints from the in-memory :class:`View` plus one Redis round trip."""

    def __init__(self, settings: Settings, cache: ModelCache, metrics: ApiMetrics, client: aredis.Redis) -> None:
        self.settings, self.cache, self.metrics, self.client = settings, cache, metrics, client
        self.store = RedisStore(settings)  # sync client, used off the event loop for rare reads
        self.keys = self.store.keys
        # redis-py's script object on the API's one client and pool: EVALSHA, and on NOSCRIPT (Redis restarted
        # or flushed its scripts) SCRIPT LOAD and once more; its errors are redis-py's, which the app answers 503.
        self._user_state: AsyncScript = client.register_script(USER_STATE_LUA)
        self._lists: dict[tuple[str, str, str], tuple[float, list[tuple[str, float]]]] = {}
        # labels() costs a few µs per call: resolve the two children once
        self._n_personal = metrics.recommendations.labels("personal")
        self._n_fallback = metrics.recommendations.labels("fallback")
        self.content = ContentService(settings, self.store)  # cold start: content and profiles
        self.hybrid = HybridRecommender(self)

    async def recommend_session(self, items: Sequence[str], user_id: str | None, k: int,
                                exclude: Sequence[str] = ()) -> RecommendationList:
        """Recommendations for recent ``items`` (newest last) of a visitor, optionally a known user."""
        req = Request(k, self.settings.rank_exclude_seen, exclude)
        return await self.hybrid.recommend_session(items, user_id, req)

    async def aclose(self) -> None:
        """Close the connections this service opened (the shared ``client`` is the caller's)."""
        self.store.close()

    # ------------------------------------------------------------------------------ recommendations
    async def recommend(self, user_id: str, k: int, *, exclude_seen: bool | None = None,
                        category: str | None = None, exclude: Sequence[str] = ()) -> RecommendationList:
        """Top-``k`` items for a user: the hybrid, or (``api_hybrid`` off) personal blended with trending, else
        the trending/popular fallback. ``exclude_seen`` defaults to the ``rank_exclude_seen`` setting."""
        if exclude_seen is None:
            exclude_seen = self.settings.rank_exclude_seen
        if self.settings.api_hybrid:
            return await self.hybrid.recommend(user_id, Request(k, exclude_seen, exclude, category))
        view = self.cache.view
        model = view.model
        version = model.version if model is not None else "-"
        p = self.keys.partition(user_id)  # every key of the user: one slot
        async with _redis_deadline():
            vec_raw, ts_raw, seen_raw = await self._user_state(
                keys=[self.keys.user_vectors(version, p), self.keys.user_ts(version, p),
                      self.keys.history(user_id, p)],
                args=[user_id, "1" if exclude_seen else "0"])
        seen = seen_raw.decode().split("\x1e") if seen_raw else []
        # A vector published with the version has no stamp of its own: the version's applies.
        written = int(ts_raw) if ts_raw else model.meta.get("vectors_at_ms") if model is not None else None
        age = max(0.0, (now_ms() - int(written)) / 1000) if written else None
        items: list[Ranked] = []
        if model is not None and vec_raw is not None and len(vec_raw) == 4 * model.n_factors:
            items = self._personal(view, np.frombuffer(vec_raw, dtype=F32), k, seen, category, exclude)
        personalized = bool(items)
        if not personalized:
            items = await self._fallback(view, k, category, {*seen, *exclude})
        (self._n_personal if personalized else self._n_fallback).inc()
        return RecommendationList(user_id, model.version if model else None,
                                  age if vec_raw is not None else None, personalized, items)

    def _personal(self, view: View, vec: np.ndarray, k: int, seen: Sequence[str], category: str | None,
                  exclude: Sequence[str]) -> list[Ranked]:
        model = view.model
        assert model is not None
        get = model.index.get
        drop = [i for i in map(get, seen) if i is not None]
        if exclude:
            drop += [i for i in map(get, exclude) if i is not None]
        weight = self.settings.blend_weight
        ranked = None
        if category is None and weight < 1:  # the index lane (None without an index or when too few remain)
            ranked = self._blend_indexed(view, vec, k, np.array(drop, dtype=np.int64), weight)
        if ranked is None:
            ranked = self._blend_scan(view, vec, k, drop, category, weight)
        if ranked is None:
            return []
        best, raws, scale = ranked
        out = []
        ids, trend_of = model.item_ids, view.trend_of
        for i, raw in zip(best.tolist(), raws.tolist(), strict=True):
            if raw == -np.inf:
                break
            final = raw * scale
            trend = weight * trend_of.get(i, 0.0)
            out.append(Ranked(ids[i], round(final, 6), TRENDING if trend > final - trend else PERSONAL))
        return out

    def _blend_indexed(self, view: View, vec: np.ndarray, k: int, drop: np.ndarray,
                       weight: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The blend over the index's candidates plus the trending rows: the same order as the scan's, as an
        item outside both has a blended score below the k-th candidate's."""
        got = blend_candidates(view, vec, k, drop)
        if got is None:
            return None
        cand, scores = got
        best_raw = float(scores.max())
        if not 0 < best_raw < math.inf:
            return None
        scale = (1.0 - weight) / best_raw
        if weight > 0 and len(view.trend_idx):
            pos = np.minimum(np.searchsorted(cand, view.trend_idx), len(cand) - 1)
            hit = cand[pos] == view.trend_idx  # trending rows that are candidates (not unavailable or dropped)
            scores[pos[hit]] += np.float32(weight / scale) * view.trend_val[hit]
        order = top_candidates(scores, k)
        return cand[order], scores[order], scale

    def _blend_scan(self, view: View, vec: np.ndarray, k: int, drop: list[int], category: str | None,
                    weight: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """The blend over every item (the exact scan)."""
        model = view.model
        assert model is not None
        scores = vec @ model.factors_t  # the scan over every item: the dominant cost of a request
        # Mask before normalising: the user's own (seen) items usually score highest, and scaling by them
        # would shrink every recommendable item and let trending take over the rail.
        scores[view.unavailable_idx] = -np.inf
        if drop:
            scores[drop] = -np.inf
        best_raw = float(scores.max())
        if not 0 < best_raw < math.inf:  # a zero (empty history) or corrupt vector ranks nothing: fallback
            return None
        # Rank by final/scale = s + (w·max s / (1-w))·t̂: the same order as the blend formula, but only the
        # few trending rows change (no pass over the whole catalogue); scale converts back to [0, 1].
        if weight < 1:
            scale = (1.0 - weight) / best_raw
            if weight > 0 and len(view.trend_idx):
                scores[view.trend_idx] += np.float32(weight / scale) * view.trend_val
        else:  # trending only, keeping the masks
            scale = 1.0
            masked = np.isneginf(scores)
            scores = np.zeros_like(scores)
            scores[view.trend_idx] = view.trend_val
            scores[masked] = -np.inf
        if category is not None:
            cand = view.category_idx.get(category)
            if cand is None:
                return None
            best = cand[top_candidates(scores[cand], k)]
        else:
            best = top_candidates(scores, k)
        return best, scores[best], scale

    async def _fallback(self, view: View, k: int, category: str | None, skip: set[str]) -> list[Ranked]:
        skip = skip | view.unavailable
        out: list[Ranked] = []
        taken: set[str] = set()
        for source in (Source.TRENDING, Source.POPULAR):
            if category is None:
                ranked = view.trending if source is Source.TRENDING else view.popular
            else:
                ranked = await self._list(source.value, "1h", category)
            top = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
            for item, score in ranked:
                if len(out) >= k:
                    return out
                if item not in skip and item not in taken:
                    taken.add(item)
                    out.append(Ranked(item, round(score / top, 6), source))
        return out

    # ------------------------------------------------------------------------------ lists (cached)
    async def _list(self, kind: str, window: str, category: str | None) -> list[tuple[str, float]]:
        """Trending or popular items (best first, top max(k) plus room for unavailable ones), cached."""
        key = (kind, window, category or "")
        hit = self._lists.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        n = self.settings.max_k + 50
        if kind == Source.TRENDING.value:
            ranked = await asyncio.to_thread(top_trending, self.store, window, category, n)
        else:
            ranked = await asyncio.to_thread(top_popular, self.store, category, n)
        if len(self._lists) > 10_000:  # bounded: categories come from requests
            self._lists.clear()
        self._lists[key] = (now + LIST_TTL_S, ranked)
        return ranked

    async def trending(self, window: str, category: str | None, k: int) -> Trending:
        """The hottest available items in ``window``, overall or in one category."""
        unavailable = self.cache.view.unavailable
        ranked = await self._list(Source.TRENDING.value, window, category)
        items = [TrendingItem(item_id=i, score=round(s, 6)) for i, s in
                 itertools.islice(((i, s) for i, s in ranked if i not in unavailable), k)]
        return Trending(window=window, category=category, items=items)

    # ------------------------------------------------------------------------------ similar, explain
    async def similar(self, item_id: str, k: int, kind: str = "blend") -> SimilarItems:
        """Items similar to ``item_id``: co-visitation, factors' cosine or both (:mod:`online_api.hybrid_service`)."""
        return await self.hybrid.similar(item_id, k, kind)

    async def explain(self, user_id: str, item_id: str, n: int) -> Explanation:
        """The user's history items that contributed most to ``item_id``'s predicted score."""
        model = self.cache.view.model
        if model is None:
            raise Unavailable("no model is loaded yet")
        target = model.index.get(item_id)
        if target is None:
            raise NotFound(f"item {item_id!r} is not in model {model.version}")
        async with _redis_deadline():
            raw = await self.client.lrange(self.keys.history(user_id), 0, -1)
        known = [(model.index[h.item], h.weight) for h in map(_interaction, raw)
                 if h is not None and h.item in model.index]
        if not known:
            raise NotFound(f"user {user_id!r} has no interactions with items of model {model.version}")
        # Repeated interactions add up, as in training (models.weighting).
        row = weighted_matrix(np.zeros(len(known)), [i for i, _ in known], [w for _, w in known],
                              shape=(1, len(model.item_ids)))
        items, weights = row.indices, row.data
        meta = model.meta
        params: dict[str, Any] = meta["params"] if isinstance(meta.get("params"), dict) else {}
        reg = float(params.get("regularization", meta.get("regularization", self.settings.als_regularization)))
        alpha = float(params.get("alpha", meta.get("alpha", self.settings.als_alpha)))
        result = explain_scores(items, weights, target, model.factors, model.gram, reg, alpha, n=n)
        weight_of = dict(zip(items.tolist(), weights.tolist(), strict=True))
        return Explanation(
            user_id=user_id, item_id=item_id, model_version=model.version, score=round(result.score, 6),
            contributions=[Contribution(item_id=model.item_ids[i], weight=round(weight_of[i], 6),
                                        contribution=round(c, 6)) for i, c in result.contributions])
