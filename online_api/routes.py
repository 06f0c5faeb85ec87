"""The /v1 endpoints. Handlers are thin: FastAPI validates (the event contract's decoder reads the
collector's bodies, :mod:`online_api.ingest`), the service layer answers.

(No ``from __future__ import annotations`` here: FastAPI reads the parameter annotations at runtime.)
"""

import asyncio
import re
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from online_api.collector import Collector
from online_api.errors import InvalidInput, NotFound, Unavailable
from online_api.ingest import read_events, request_body
from online_api.schemas import (
    ID_PATTERN,
    MAX_EXCLUDE,
    Accepted,
    Explanation,
    Item,
    ItemIn,
    Profile,
    ProfileIn,
    Recommendations,
    SessionIn,
    SessionRecommendations,
    SimilarItems,
    Trending,
    UserDeleted,
    error_responses,
)
from online_api.security import refuse_ingest_keys, require_collector_key
from online_api.service import Recommender
from streamrec.event_model import ID_RULE, id_text_ok
from streamrec.events import MAX_ID_LEN, Event
from streamrec.settings import Settings
from streamrec.store.catalog import get_item, put_items
from streamrec.store.content import delete_user, get_profile, put_profile
from streamrec.store.trending import WINDOWS

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN, examples=["u-1842"])]
ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN, examples=["sku-77"])]
Category = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN,
                                       description="only items of this catalogue category")]
WINDOW_PATTERN = "^(" + "|".join(re.escape(w) for w in WINDOWS) + ")$"
DEFAULT_K = 10


def split_exclude(values: Sequence[str] | None) -> list[str]:
    """The ``exclude`` parameter's ids: it may be repeated, and each value may hold comma-separated ids."""
    return [x for part in values or () for x in part.split(",") if x]


def route_named(router: APIRouter, name: str) -> APIRoute:
    """The route of ``router`` whose endpoint is called ``name``."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.name == name)


def read_router(settings: Settings, svc: Recommender, auth: list[Any]) -> APIRouter:
    """Recommendations, similar items, explanations, trending, and catalogue reads."""
    r = APIRouter(prefix="/v1", dependencies=auth)
    _recommendation_routes(r, settings, svc)
    _lookup_routes(r, settings, svc)
    return r


def _recommendation_routes(r: APIRouter, settings: Settings, svc: Recommender) -> None:
    """Recommended for you, similar items, and session (anonymous) recommendations."""
    K = Annotated[int, Query(ge=1, le=settings.max_k, description=f"how many items (1 to {settings.max_k})")]
    reads = error_responses(401, 403, 422, 503)

    @r.get("/users/{user_id}/recommendations", response_model=Recommendations, responses=reads,
           tags=["recommendations"], summary="Recommended for you")
    async def recommendations(
        user_id: UserId,
        k: K = DEFAULT_K,
        exclude_seen: Annotated[bool, Query(description="leave out items the user interacted with (default: "
                                            "the rank_exclude_seen setting)")] = settings.rank_exclude_seen,
        category: Category = None,
        exclude: Annotated[list[str] | None, Query(
            max_length=MAX_EXCLUDE, description="item ids to leave out (repeat the parameter or separate "
            "with commas), e.g. the items already on the page")] = None,
    ) -> Response:
        """The hybrid top-k: the user's ALS scores, co-visitation neighbours of their last items, their repeat
        items ("buy again"), trending and popular, each divided by its best score and blended with the
        STREAMREC_RANK_* weights. A user without signals gets trending and popular items. Each item names
        its dominant source."""
        # Plainly valid requests are answered by online_api.fastpath (same service call, same bytes) before
        # they reach this route, which documents the endpoint and answers the rest, invalid ones included.
        # The lane reads this signature: a parameter added here needs a parser in fastpath.BUILDERS (named as
        # the service call's keyword), else the lane switches itself off and its unit test fails.
        ids = split_exclude(exclude)
        if len(ids) > MAX_EXCLUDE:
            raise InvalidInput(f"query.exclude: at most {MAX_EXCLUDE} ids",
                               fields=[{"field": "query.exclude", "message": f"at most {MAX_EXCLUDE} ids"}])
        answer = await svc.recommend(user_id, k, exclude_seen=exclude_seen, category=category, exclude=ids)
        return Response(answer.to_json(), media_type="application/json")

    @r.get("/items/{item_id}/similar", response_model=SimilarItems, responses=error_responses(
        401, 403, 404, 422, 503), tags=["recommendations"], summary="You might also like")
    async def similar(item_id: ItemId, k: K = 10, kind: Annotated[str, Query(
            pattern="^(covisitation|factors|blend|content)$", description="covisitation (viewed with it), factors "
            "(cosine of the model's factors), blend (both, each divided by its best) or content (cosine of the "
            "catalogue content: category, brand, price band, text)")] = "blend") -> SimilarItems:
        """Available items similar to this one. An item new since the refit has co-visitation neighbours
        within seconds of its first events; factors need the item in the model (404 otherwise); content
        needs its catalogue entry (404 otherwise), and answers within a second of its PUT."""
        return await svc.similar(item_id, k, kind)

    @r.get("/users/{user_id}/new-arrivals", response_model=Recommendations, responses=reads,
           tags=["recommendations"], summary="New arrivals for you")
    async def new_arrivals(user_id: UserId, k: K = DEFAULT_K) -> Response:
        """Available items new since the last refit (put with metadata, or folded in from their first
        interactions), ranked by the user's vector (their profile's for a new user): ``personalized`` and
        source ``personal``; without either, by the length of the items' vectors (source ``popular``)."""
        answer = await svc.hybrid.new_arrivals(user_id, k)
        return Response(answer.to_json(), media_type="application/json")

    @r.post("/recommendations", response_model=SessionRecommendations, responses=reads,
            tags=["recommendations"], summary="Recommendations for a session (anonymous visitors)")
    async def session_recommendations(body: SessionIn) -> Response:
        """For visitors without an id (or with one): the fold-in of their recent items against the item
        factors plus the items' co-visitation neighbours, ranked with trending and popular like the user
        recommendations. The posted items and the user's seen items are left out by rank_exclude_seen."""
        if body.k > settings.max_k:
            raise InvalidInput(f"body.k: at most {settings.max_k}",
                               fields=[{"field": "body.k", "message": f"at most {settings.max_k}"}])
        bad = [f"body.{name}" for name, ids in (("items", body.items), ("exclude", body.exclude),
                                                 ("user_id", [body.user_id] if body.user_id else []))
               if not all(map(id_text_ok, ids))]
        if bad:
            raise InvalidInput(f"{bad[0]}: {ID_RULE}", fields=[{"field": f, "message": ID_RULE} for f in bad])
        answer = await svc.recommend_session(body.items, body.user_id, body.k, body.exclude)
        return Response(answer.to_json(), media_type="application/json")



def _lookup_routes(r: APIRouter, settings: Settings, svc: Recommender) -> None:
    """Explanations, trending and catalogue reads."""
    K = Annotated[int, Query(ge=1, le=settings.max_k, description=f"how many items (1 to {settings.max_k})")]
    reads = error_responses(401, 403, 422, 503)

    @r.get("/users/{user_id}/recommendations/{item_id}/explain", response_model=Explanation,
           responses=error_responses(401, 403, 404, 422, 503), tags=["recommendations"],
           summary="Why was this item recommended")
    async def explain(user_id: UserId, item_id: ItemId,
                      n: Annotated[int, Query(ge=1, le=50, description="contributions to return")] = 5) -> Explanation:
        """The user's interactions that contributed most to the item's predicted score."""
        return await svc.explain(user_id, item_id, n)

    @r.get("/trending", response_model=Trending, responses=reads, tags=["recommendations"],
           summary="Trending now")
    async def trending(
        window: Annotated[str, Query(pattern=WINDOW_PATTERN, description=f"one of {', '.join(WINDOWS)}")] = "1h",
        category: Category = None, k: K = 10,
    ) -> Trending:
        """Items with the highest time-decayed interaction weight in the window (cached ~1.5 s)."""
        return await svc.trending(window, category, k)

    @r.get("/items/{item_id}", response_model=Item, responses=error_responses(401, 403, 404, 422, 503),
           tags=["catalogue"], summary="Catalogue entry of an item")
    async def read_item(item_id: ItemId) -> Item:
        found = await asyncio.to_thread(get_item, svc.store, item_id)
        if found is None:
            raise NotFound(f"item {item_id!r} is not in the catalogue")
        attrs = {k: v for k, v in found.items() if k not in ("item_id", "category", "available")}
        return Item(item_id=item_id, category=found["category"], available=found["available"], attributes=attrs)


def write_router(settings: Settings, svc: Recommender, collector: Collector, auth: Any) -> APIRouter:
    """The event collector and catalogue writes (always keyed).

    ``auth`` is the full-access key check (``STREAMREC_API_KEYS``): catalogue writes need it. The
    collector also takes collector-only keys (``STREAMREC_API_INGEST_KEYS``), which catalogue writes
    refuse with a 403 that says why.
    """
    r = APIRouter(prefix="/v1")
    collect = [Depends(require_collector_key(settings))]
    # The ingest check goes first: FastAPI runs a route's dependencies in order, so an ingest key gets the
    # explanatory 403 and every other request (no key, a full key, a wrong key) is decided by ``auth``.
    catalogue = [Depends(refuse_ingest_keys(settings, "catalogue writes")), Depends(auth)]
    writes = error_responses(400, 401, 403, 413, 422, 503)
    max_future_ms = int(settings.max_future_skew_s * 1000)

    async def decoded(request: Request, *, batch: bool) -> list[Event]:
        try:
            return read_events(await request.body(), request.headers.get("content-type"), batch=batch,
                               max_future_ms=max_future_ms)
        except InvalidInput:
            svc.metrics.events.labels("invalid").inc()
            raise

    async def send(events: list[Event]) -> None:
        try:
            await collector.send(events)
        except Unavailable:
            svc.metrics.events.labels("unavailable").inc()
            raise
        svc.metrics.events.labels("accepted").inc(len(events))

    @r.post("/events", status_code=202, response_model=Accepted, responses=writes, tags=["collector"],
            dependencies=collect, summary="Post one event", openapi_extra=request_body("Event"))
    async def post_event(request: Request) -> Accepted:
        """Validates the event, writes it to Kafka (idempotent producer, acks=all) and answers 202 once Kafka
        acknowledged it: an accepted event is never lost. 503 with Retry-After while Kafka is unreachable."""
        events = await decoded(request, batch=False)
        await send(events)
        return Accepted(accepted=1, event_ids=[str(events[0].event_id)])

    @r.post("/events:batch", status_code=202, response_model=Accepted, responses=writes, tags=["collector"],
            dependencies=collect, summary="Post up to 500 events", openapi_extra=request_body("EventBatch"))
    async def post_events(request: Request) -> Accepted:
        """All events are validated first; one invalid event rejects the batch (422, nothing written).
        Retrying a batch after a 503 is safe: events are de-duplicated by event_id downstream."""
        events = await decoded(request, batch=True)
        await send(events)
        return Accepted(accepted=len(events), event_ids=[str(e.event_id) for e in events])

    @r.put("/items/{item_id}", response_model=Item, responses=writes, tags=["catalogue"], dependencies=catalogue,
           summary="Create or update an item's catalogue entry")
    async def put_item(item_id: ItemId, item: ItemIn) -> Item:
        """Category (used by category filters and category trending), availability (unavailable items never
        appear in any answer, from the moment this returns) and free-form attributes."""
        reserved = {"item_id", "category", "available"} & item.attributes.keys()
        if reserved:
            raise InvalidInput(f"body.attributes: reserved key {sorted(reserved)[0]!r}",
                               fields=[{"field": "body.attributes", "message": "reserved key"}])
        entry = {"item_id": item_id, "category": item.category, "available": item.available, **item.attributes}
        await asyncio.to_thread(put_items, svc.store, [entry])
        svc.cache.mark_item(item_id, item.category, item.available)
        model = svc.cache.view.model
        fitted = model is not None and model.index.get(item_id, model.n_base) < model.n_base
        await asyncio.to_thread(svc.content.put_item, item_id, entry, model.version if model else None, fitted)
        return Item(item_id=item_id, category=item.category, available=item.available, attributes=item.attributes)

    _user_routes(r, svc, catalogue)
    return r


def _user_routes(r: APIRouter, svc: Recommender, auth: list[Any]) -> None:
    """User profiles and deletion: personal data, so full-access keys only (docs/api.md#what-is-stored)."""
    personal = error_responses(401, 403, 404, 422, 503)

    @r.put("/users/{user_id}/profile", response_model=Profile, responses=error_responses(400, 401, 403, 413, 422, 503),
           tags=["users"], dependencies=auth, summary="Create or replace a user's profile")
    async def put_user_profile(user_id: UserId, body: ProfileIn) -> Profile:
        """Typed free-form attributes (age band, segment, region, household size, ...). A user without
        history gets recommendations from the profile (through the regression fitted at refit), fading out
        as their own events arrive."""
        await asyncio.to_thread(put_profile, svc.store, user_id, body.attributes)
        return Profile(user_id=user_id, attributes=body.attributes)

    @r.get("/users/{user_id}/profile", response_model=Profile, responses=personal, tags=["users"],
           dependencies=auth, summary="A user's profile")
    async def read_user_profile(user_id: UserId) -> Profile:
        found = await asyncio.to_thread(get_profile, svc.store, user_id)
        if found is None:
            raise NotFound(f"user {user_id!r} has no profile")
        return Profile(user_id=user_id, attributes=found)

    @r.delete("/users/{user_id}", response_model=UserDeleted, responses=error_responses(401, 403, 422, 503),
              tags=["users"],
              dependencies=auth, summary="Delete everything stored about a user")
    async def delete_user_data(user_id: UserId) -> UserDeleted:
        """Removes the profile, the history, the event count and the user's vector in every model version
        (idempotent: deleting again answers zeros). Events already in Kafka stay until the topics' retention
        removes them (docs/api.md#what-is-stored-about-a-user)."""
        removed = await asyncio.to_thread(delete_user, svc.store, user_id)
        return UserDeleted(user_id=user_id, removed=removed)
