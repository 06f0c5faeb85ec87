"""The storefront demo page and the catalogue reads it needs.

``storefront_router`` serves

* the page (``/`` redirects to ``/store``; ``/store/app.js`` and ``/store/style.css``), static files from
  ``online_api/static`` with no build step;
* ``/storefront/config.json``: what the page needs from the server: the public ingest key it posts
  events with (``STREAMREC_STOREFRONT_INGEST_KEY``, handed out only when it is a collector-only key,
  see :func:`public_ingest_key`), the poll interval, simulated users to switch to;
* ``GET /v1/items`` (a page of the catalogue, optionally one category, or given ids) and
  ``GET /v1/categories``, read from the catalogue in Redis (``streamrec.store.catalog`` layout).

(No ``from __future__ import annotations``: FastAPI reads the parameter annotations at runtime.)
"""

import asyncio
import json
import logging
import re
import time
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from online_api.errors import InvalidInput, NotFound, Unavailable
from online_api.schemas import ID_PATTERN, Item, error_responses
from online_api.service import Recommender
from streamrec.events import MAX_ID_LEN
from streamrec.settings import Settings
from streamrec.store import as_str

log = logging.getLogger("streamrec.api")

STATIC = FsPath(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
NO_CACHE = {"Cache-Control": "no-cache"}
INDEX_TTL_S = 2.0  # the item → category index is re-read at most this often
MAX_IDS = 100
SIMULATED_USERS = [f"u{i}" for i in range(21)]  # ids the simulator gives its most active users
_DIGITS = re.compile(r"(\d+)")


def natural_key(item_id: str) -> tuple[Any, ...]:
    """Sort ``i2`` before ``i10``: simulator ids (and most SKUs) carry numbers."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(item_id))


class ItemPage(BaseModel):
    """A page of catalogue entries."""

    total: int = Field(description="matching available items (for ids: items found)")
    offset: int
    limit: int
    category: str | None
    items: list[Item]


class CategoryCount(BaseModel):
    category: str
    items: int = Field(description="available items in the category")


class Categories(BaseModel):
    categories: list[CategoryCount]


class StorefrontConfig(BaseModel):
    ingest_key: str | None = Field(description="public key the page posts events with; null: read-only page")
    read_key_required: bool = Field(description="reads need a full-access key (STREAMREC_API_READ_KEYS_REQUIRED), "
                                    "which the page never has: it cannot read")
    poll_ms: int
    simulated_users: list[str]


class CatalogIndex:
    """Item ids by category, natural order, re-read from Redis at most every ``INDEX_TTL_S``."""

    def __init__(self, svc: Recommender) -> None:
        self.svc = svc
        self._at = -1e9
        self._by_cat: dict[str, list[str]] = {}
        self._all: list[str] = []
        self._lock = asyncio.Lock()

    async def get(self) -> tuple[list[str], dict[str, list[str]]]:
        async with self._lock:
            if time.monotonic() - self._at > INDEX_TTL_S:
                raw = await _bounded(self.svc.client.hgetall(self.svc.keys.item_category))
                by_cat: dict[str, list[str]] = {}
                for item, cat in raw.items():
                    by_cat.setdefault(as_str(cat), []).append(as_str(item))
                for ids in by_cat.values():
                    ids.sort(key=natural_key)
                self._by_cat = by_cat
                self._all = sorted((i for ids in by_cat.values() for i in ids), key=natural_key)
                self._at = time.monotonic()
            return self._all, self._by_cat


async def _bounded(coro: Any) -> Any:
    """A Redis call that becomes a 503 instead of hanging the page."""
    try:
        async with asyncio.timeout(1.0):
            return await coro
    except TimeoutError:
        raise Unavailable("the store did not answer in time; retry shortly") from None


def _entry(item_id: str, raw: dict[bytes, bytes]) -> Item:
    fields = {as_str(k): as_str(v) for k, v in raw.items()}
    try:
        attrs = json.loads(fields.get("attrs", "{}"))
    except ValueError:  # a hand-written entry with broken JSON still lists, without attributes
        attrs = {}
    return Item(item_id=item_id, category=fields.get("category"), available=fields.get("available", "1") == "1",
                attributes=attrs if isinstance(attrs, dict) else {})


def public_ingest_key(settings: Settings) -> str | None:
    """The key ``/storefront/config.json`` hands every browser, or None (the page is then read-only).

    Only a collector-only key (one of ``STREAMREC_API_INGEST_KEYS``, not of ``STREAMREC_API_KEYS``) is
    handed out: whatever the page holds is public, and a full-access key would let anyone rewrite the
    catalogue. A misconfigured key is refused here, with a warning, rather than published.
    """
    key = settings.storefront_ingest_key
    if not key:
        return None
    if key in settings.api_key_list:
        log.warning("STREAMREC_STOREFRONT_INGEST_KEY is one of STREAMREC_API_KEYS (full access): it is not handed "
                    "to browsers and the storefront page is read-only; give the page a key of its own in "
                    "STREAMREC_API_INGEST_KEYS")
        return None
    if key not in settings.api_ingest_key_list:
        log.warning("STREAMREC_STOREFRONT_INGEST_KEY is not one of STREAMREC_API_INGEST_KEYS, so the collector "
                    "would refuse it: the storefront page is read-only")
        return None
    return key


def storefront_router(settings: Settings, svc: Recommender, read_auth: list[Any]) -> APIRouter:
    """The page (always open) and the catalogue reads (keyed like the other reads)."""
    r = APIRouter()
    index = CatalogIndex(svc)
    ingest_key = public_ingest_key(settings)

    @r.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/store")

    @r.get("/store", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)

    @r.get("/store/{asset}", include_in_schema=False)
    async def asset(asset: str) -> FileResponse:
        if asset not in ASSETS:  # a fixed list: no path from the request ever reaches the file system
            raise NotFound(f"no storefront asset {asset!r}")
        return FileResponse(STATIC / asset, media_type=ASSETS[asset], headers=NO_CACHE)

    @r.get("/storefront/config.json", response_model=StorefrontConfig, tags=["storefront"],
           summary="Configuration of the storefront page")
    async def config() -> JSONResponse:
        """The ingest key here is public by design (every visitor's browser gets it): it is a collector-only
        key (``STREAMREC_API_INGEST_KEYS``), which a real deployment also rate-limits at the edge."""
        body = StorefrontConfig(ingest_key=ingest_key,
                                read_key_required=settings.api_read_keys_required,
                                poll_ms=settings.storefront_poll_ms, simulated_users=SIMULATED_USERS)
        return JSONResponse(body.model_dump(), headers={"Cache-Control": "no-store"})

    v1 = APIRouter(prefix="/v1", dependencies=read_auth, tags=["catalogue"])

    @v1.get("/items", response_model=ItemPage, responses=error_responses(401, 403, 422, 503),
            summary="List the catalogue")
    async def list_items(
        category: Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN,
                                              description="only items of this category")] = None,
        ids: Annotated[str | None, Query(max_length=MAX_IDS * (MAX_ID_LEN + 1), description=(
            f"comma-separated item ids to look up (at most {MAX_IDS}; unavailable ones included, "
            "unknown ones left out); ignores category, limit and offset"))] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 24,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> ItemPage:
        """Available items with a category, in natural id order (``i2`` before ``i10``), a page at a time;
        or the entries of the given ``ids``. Attributes hold what the catalogue writer stored (the
        simulator writes ``name`` and ``price``)."""
        if ids is not None:
            wanted = list(dict.fromkeys(x for x in ids.split(",") if x))
            if len(wanted) > MAX_IDS:
                raise InvalidInput(f"query.ids: at most {MAX_IDS} ids",
                                   fields=[{"field": "query.ids", "message": f"at most {MAX_IDS} ids"}])
            found = [e for e in await _entries(svc, wanted) if e is not None]
            return ItemPage(total=len(found), offset=0, limit=len(wanted), category=None, items=found)
        everything, by_cat = await index.get()
        pool = by_cat.get(category, []) if category is not None else everything
        unavailable = svc.cache.view.unavailable
        if unavailable:
            pool = [i for i in pool if i not in unavailable]
        entries = await _entries(svc, pool[offset: offset + limit])
        return ItemPage(total=len(pool), offset=offset, limit=limit, category=category,
                        items=[e for e in entries if e is not None])

    @v1.get("/categories", response_model=Categories, responses=error_responses(401, 403, 503),
            summary="Catalogue categories")
    async def categories() -> Categories:
        """Every category with its number of available items, largest first."""
        _, by_cat = await index.get()
        unavailable = svc.cache.view.unavailable
        counts = [CategoryCount(category=c, items=sum(1 for i in ids if i not in unavailable))
                  for c, ids in by_cat.items()]
        counts.sort(key=lambda c: (-c.items, c.category))
        return Categories(categories=counts)

    r.include_router(v1)
    return r


async def _entries(svc: Recommender, item_ids: list[str]) -> list[Item | None]:
    """Catalogue entries in one pipelined round trip (None for ids not in the catalogue)."""
    if not item_ids:
        return []
    pipe = svc.client.pipeline(transaction=False)
    for item in item_ids:
        pipe.hgetall(svc.keys.item(item))
    raws = await _bounded(pipe.execute())
    return [_entry(item, raw) if raw else None for item, raw in zip(item_ids, raws, strict=True)]
