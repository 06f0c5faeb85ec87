"""The hybrid read endpoints: user and session recommendations through :mod:`online_api.hybrid`, and
``similar`` by co-visitation, factors or both.

Similar items, ``kind``:

* ``covisitation``: the item's co-visitation hash (what the worker keeps, so an item new since the refit
  has neighbours within seconds of its first events), true scores at now;
* ``factors``: cosine similarity of the served model's item factors (404 for an item it does not know),
  through the item index on a big catalogue (:func:`online_api.retrieval.similar_top`);
* ``blend`` (default): each of the two divided by its best score, weighted by
  ``similar_weight_covisitation`` and ``similar_weight_factors`` and summed; an item with only one of
  them answers with that one, an item with neither is a 404;
* ``content``: cosine similarity of the items' content features (:mod:`online_api.content`): an item put
  with metadata has neighbours before anyone interacted with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import redis.asyncio as aredis
from prometheus_client import Counter

from models.foldin import fold_in_users
from models.learned_ranker import LearnedRanker, RankerFileError
from models.ranking import rank
from online_api.cache import ModelCache, ServedModel, View
from online_api.content import ContentService, new_arrivals, with_profile
from online_api.deadline import redis_deadline
from online_api.errors import NotFound, Unavailable
from online_api.hybrid import (
    COVIS_LUA,
    HYBRID_STATE_LUA,
    Request,
    Shop,
    UserReply,
    hybrid_inputs,
    parse_reply,
    ranked_items,
    session_items,
    shop_signals,
)
from online_api.retrieval import similar_top
from online_api.schemas import RecommendationList, SimilarItem, SimilarItems, Source
from streamrec.events import now_ms
from streamrec.ranking_settings import ranking_config
from streamrec.settings import Settings
from streamrec.store import F32, Keys, RedisStore
from streamrec.store.covisitation import covis_key, parse_neighbours


class Host(Protocol):
    """What the hybrid paths use of :class:`online_api.service.Recommender`."""

    settings: Settings
    cache: ModelCache
    client: aredis.Redis
    store: RedisStore
    keys: Keys
    content: ContentService
    _n_personal: Counter
    _n_fallback: Counter

    async def _list(self, kind: str, window: str, category: str | None) -> list[tuple[str, float]]: ...

def load_ranker(path: str | None) -> LearnedRanker | None:
    """The learned ranker of ``STREAMREC_RANK_MODEL_FILE`` (read once at start), or None: the blend orders.

    A missing or foreign file stops the API at start with the reason (a typed
    :class:`models.learned_ranker.RankerFileError`), rather than serving another order than configured."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RankerFileError(f"STREAMREC_RANK_MODEL_FILE={path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RankerFileError(f"STREAMREC_RANK_MODEL_FILE={path}: not a streamrec ranker file (not text)") from exc
    try:
        return LearnedRanker.from_text(text)
    except RankerFileError as exc:
        raise RankerFileError(f"STREAMREC_RANK_MODEL_FILE={path}: {exc}") from exc


USER_SOURCES = frozenset({Source.PERSONAL, Source.COVISITATION, Source.REPEAT, Source.CONTENT})
KINDS = ("covisitation", "factors", "blend", "content")


class HybridRecommender:
    """The hybrid paths of a :class:`online_api.service.Recommender` (its client, cache and lists)."""

    def __init__(self, svc: Host) -> None:
        self.svc = svc
        self.cfg = ranking_config(svc.settings)
        s = svc.settings
        self.covis = (s.covis_half_life_s, s.covis_top_n)
        self.covis_prefix = covis_key(svc.store, "")
        self.cluster = svc.store.cluster
        self._state = svc.client.register_script(HYBRID_STATE_LUA)
        self._covis = svc.client.register_script(COVIS_LUA)  # Redis Cluster: every co-visitation key is slot {c}
        self.ranker = load_ranker(s.rank_model_file)
        self._shop_cache: tuple[View, Shop] | None = None

    async def _read(self, user_id: str, model: ServedModel | None, posted: Sequence[str]) -> UserReply:
        keys = self.svc.keys
        version = model.version if model is not None else "-"
        p = keys.partition(user_id)  # every key of the user: one slot
        async with redis_deadline():
            raw = await self._state(keys=[keys.user_vectors(version, p), keys.user_ts(version, p),
                                          keys.history(user_id, p), keys.profiles(p)],
                                    args=[user_id, self.cfg.session_items, "" if self.cluster else self.covis_prefix,
                                          self._profile_below(model), *posted[::-1]])
            reply = parse_reply(raw)
            if self.cluster and (items := session_items(raw)):  # the co-visitation keys live in their own slot
                flat = await self._covis(keys=[self.covis_prefix + item for item in items])
                reply.hashes = {item: dict(zip(f[::2], f[1::2], strict=True))
                                for item, f in zip(items, flat, strict=True)}
        return reply

    def _profile_below(self, model: ServedModel | None) -> int:
        """Read the profile of users with fewer history entries than this (0: no profile model served)."""
        version = model.version if model is not None else None
        return self.svc.settings.profile_fade_events if self.svc.content.profile_weight(0, version) > 0 else 0

    async def _shop(self, view: View, category: str | None) -> Shop:
        """The shop-wide signals: the view's lists (built once per view), or the category's lists."""
        if category is None:
            cached = self._shop_cache
            if cached is None or cached[0] is not view:
                cached = self._shop_cache = (view, shop_signals(view, {"trending": view.trending,
                                                                       "popular": view.popular}))
            return cached[1]
        return shop_signals(view, {"trending": await self.svc._list(Source.TRENDING.value, "1h", category),
                                   "popular": await self.svc._list(Source.POPULAR.value, "1h", category)})

    async def _answer(self, view: View, reply: UserReply, now: int, req: Request,
                      vec: np.ndarray | None) -> tuple[list, bool]:
        shop = await self._shop(view, req.category)
        content = self.svc.content.neighbours if self.svc.settings.rank_content_neighbours else None
        arrivals = self.svc.content.arrivals(view.model, reply.items, self.cfg.candidates) \
            if self.cfg.content > 0 or self.ranker is not None else None
        inputs, index = hybrid_inputs(view, self.cfg, reply, now, req, shop, self.covis, vec, content, arrivals)
        items = ranked_items(rank(inputs, self.cfg, req.k, self.ranker), index)
        personalized = any(r.source in USER_SOURCES for r in items)
        (self.svc._n_personal if personalized else self.svc._n_fallback).inc()
        return items, personalized

    async def recommend(self, user_id: str, req: Request) -> RecommendationList:
        """A user's top ``k`` by :func:`models.ranking.rank` over every source."""
        view = self.svc.cache.view
        model = view.model
        reply = await self._read(user_id, model, ())
        now = now_ms()
        vec = self._with_profile(model, reply, _vector(model, reply.vec_raw))
        items, personalized = await self._answer(view, reply, now, req, vec)
        written = int(reply.ts_raw) if reply.ts_raw else model.meta.get("vectors_at_ms") if model else None
        age = max(0.0, (now - int(written)) / 1000) if written and vec is not None else None
        return RecommendationList(user_id, model.version if model else None, age, personalized, items)

    def _with_profile(self, model: ServedModel | None, reply: UserReply, vec: np.ndarray | None
                      ) -> np.ndarray | None:
        """The user's vector blended with their profile's (online_api/content.py); the state script read
        the profile only for users with fewer than ``profile_fade_events`` events (established users pay
        nothing, new ones no extra round trip)."""
        content = self.svc.content
        weight = content.profile_weight(len(reply.items), model.version if model is not None else None)
        if weight <= 0 or model is None:
            return vec
        return with_profile(vec, content.profile_vector(reply.profile_raw, model.n_factors), weight)

    async def new_arrivals(self, user_id: str, k: int) -> RecommendationList:
        """Items new since the refit (a PUT item with metadata from its first second), for this user."""
        view = self.svc.cache.view
        model = view.model
        reply = await self._read(user_id, model, ())
        vec = self._with_profile(model, reply, _vector(model, reply.vec_raw))
        items = new_arrivals(view, vec, k, frozenset(reply.items))
        return RecommendationList(user_id, model.version if model else None, None, vec is not None, items)

    async def recommend_session(self, posted: Sequence[str], user_id: str | None, req: Request) -> RecommendationList:
        """Recommendations for a session (recent items, newest last), optionally of a known user: the fold-in
        of the history and the session against the item factors, plus co-visitation of the session."""
        view = self.svc.cache.view
        model = view.model
        now = now_ms()
        reply = (await self._read(user_id or "", model, posted)).with_session(posted, now)
        vec = self._fold_in(model, reply) if model is not None else None
        items, personalized = await self._answer(view, reply, now, req, vec)
        return RecommendationList(user_id or "", model.version if model else None, 0.0 if vec is not None else None,
                                  personalized, items)

    def _fold_in(self, model: ServedModel, reply: UserReply) -> np.ndarray | None:
        """The user vector of the history and session items the model knows (weights as recorded; clicks 1)."""
        get = model.index.get
        pairs = [(i, w) for i, w in zip(map(get, reply.items), reply.weights.tolist(), strict=True) if i is not None]
        if not pairs:
            return None
        meta = model.meta
        params: dict[str, Any] = meta["params"] if isinstance(meta.get("params"), dict) else {}
        s = self.svc.settings
        reg = float(params.get("regularization", model.meta.get("regularization", s.als_regularization)))
        alpha = float(params.get("alpha", model.meta.get("alpha", s.als_alpha)))
        idx = np.array([i for i, _ in pairs], dtype=np.int64)
        w = np.array([w for _, w in pairs], dtype=np.float32)
        uniq, inv = np.unique(idx, return_inverse=True)  # repeated interactions add up, as in training
        summed = np.bincount(inv, weights=w).astype(np.float32)
        vec = fold_in_users(model.factors, model.gram, [(uniq, summed)], reg, alpha)[0]
        return vec if np.isfinite(vec).all() and vec.any() else None

    # ------------------------------------------------------------------------------ similar
    async def similar(self, item_id: str, k: int, kind: str) -> SimilarItems:
        """Items similar to ``item_id`` by ``kind`` (see the module docstring), available ones only."""
        view = self.svc.cache.view
        model = view.model
        if kind == "content":
            return self._similar_content(view, item_id, k)
        covis: list[tuple[str, float]] = []
        if kind != "factors":
            async with redis_deadline():
                raw = cast(dict[bytes, bytes], await self.svc.client.hgetall(self.covis_prefix + item_id))
            skip = view.unavailable
            covis = [(i, s) for i, s in parse_neighbours(raw, now_ms(), *self.covis)
                     if i != item_id and i not in skip and s > 0]
        factors: list[tuple[str, float]] = []
        if kind != "covisitation":
            if model is None and (kind == "factors" or not covis):
                raise Unavailable("no model is loaded yet")
            idx = model.index.get(item_id) if model is not None else None
            if idx is None and (kind == "factors" or not covis):
                version = model.version if model is not None else "-"
                raise NotFound(f"item {item_id!r} is not in model {version} and has no co-visitation neighbours")
            if idx is not None and model is not None:
                n = k if kind == "factors" else max(k, self.svc.settings.covis_top_n)
                best, scores = similar_top(view, idx, n)
                factors = [(model.item_ids[i], float(s)) for i, s in zip(best.tolist(), scores.tolist(), strict=True)]
        if kind == "covisitation":
            picked = covis[:k]
        elif kind == "factors":
            picked = factors[:k]
        else:
            s = self.svc.settings
            picked = blend(covis, factors, s.similar_weight_covisitation, s.similar_weight_factors, k)
        return SimilarItems(item_id=item_id, kind=kind, model_version=model.version if model is not None else None,
                            items=[SimilarItem(item_id=i, score=round(v, 6)) for i, v in picked])

    def _similar_content(self, view: View, item_id: str, k: int) -> SimilarItems:
        """Cosine similarity of content features (category, brand, price band, TF-IDF of the text)."""
        content = self.svc.content.view
        if content is None or content.items is None:
            raise NotFound("no content model is published yet: it is fitted at the next refit of a catalogue")
        picked = self.svc.content.similar(item_id, k, view.unavailable)
        if picked is None:
            raise NotFound(f"item {item_id!r} has no content features (no catalogue entry in model "
                           f"{content.version})")
        return SimilarItems(item_id=item_id, kind="content", model_version=content.version,
                            items=[SimilarItem(item_id=i, score=round(v, 6)) for i, v in picked])


def blend(covis: list[tuple[str, float]], factors: list[tuple[str, float]], w_covis: float, w_factors: float,
          k: int) -> list[tuple[str, float]]:
    """Each list divided by its best (positive) score, weighted and summed; best first, ties by id."""
    total: dict[str, float] = {}
    for ranked, w in ((covis, w_covis), (factors, w_factors)):
        top = max((s for _, s in ranked), default=0.0)
        if top <= 0 or w <= 0:
            continue
        for item, score in ranked:
            if score > 0:
                total[item] = total.get(item, 0.0) + w * score / top
    return sorted(total.items(), key=lambda p: (-p[1], p[0]))[:k]


def _vector(model: ServedModel | None, raw: bytes | None) -> np.ndarray | None:
    """The stored user vector when it has the model's length, else None."""
    if model is None or raw is None or len(raw) != 4 * model.n_factors:
        return None
    vec = np.frombuffer(raw, dtype=F32)
    return vec if np.isfinite(vec).all() else None

