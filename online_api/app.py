"""The FastAPI application factory: ``create_app(settings)``.

``uvicorn --factory online_api.app:app_from_env`` (what ``streamrec api`` runs) builds it from
``STREAMREC_*`` variables. Start-up loads the current model in the background: the app answers at once,
``/readyz`` says 503 until Redis answered and a model is loaded.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import redis.asyncio as aredis
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from online_api.cache import ModelCache
from online_api.collector import Collector
from online_api.errors import RETRY_AFTER_S, install_error_handlers
from online_api.fastpath import RecommendationsFastPath
from online_api.ingest import install_event_schemas
from online_api.metrics import ApiMetrics
from online_api.middleware import Guard, HeadAsGet
from online_api.refresher import Refresher
from online_api.routes import read_router, route_named, write_router
from online_api.schemas import Health, Ready
from online_api.security import HEADER, WeakApiKey, check_key_strength, require_key
from online_api.service import Recommender
from online_api.storefront import storefront_router
from streamrec.redis_clients import async_client
from streamrec.settings import Settings

log = logging.getLogger("streamrec.api")

READY_STALE_S = 5.0  # Redis counts as reachable when the refresher succeeded this recently
# Metrics are Prometheus (/metrics). FastAPI versions with native OpenTelemetry hooks look up three global
# providers on every request to decide whether to trace it: switched off where they exist.
NO_OTEL: dict[str, Any] = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                           if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})

DESCRIPTION = """Recommendations from a streaming implicit-ALS model, and the event collector.

Reads are open unless `STREAMREC_API_READ_KEYS_REQUIRED=true`; writes (`/v1/events`, `PUT /v1/items`)
need an API key in the `X-API-Key` header. Errors have one shape: `{"error": {"code", "message",
"fields"}}`; 503 answers carry `Retry-After`. See docs/api.md.
"""


def create_app(settings: Settings | None = None, *, background: bool = True) -> FastAPI:
    """Build the API. ``background=False`` skips the refresher and Kafka poll threads (for unit tests).

    Raises :class:`online_api.security.WeakApiKey` when a full-access key is guessable.
    """
    settings = settings or Settings()
    check_key_strength(settings)
    metrics = ApiMetrics()
    cache = ModelCache(settings)
    collector = Collector(settings)
    # The API's one Redis client and pool (the service's Lua script runs on it too). No socket_timeout:
    # redis-py implements it with asyncio.wait_for (a task per command, measurably slow); the service bounds
    # every call with asyncio.timeout instead (service.REDIS_TIMEOUT_S). One retry on a connection error: an
    # idle connection whose socket Redis closed (a restart) can be handed out before the loop saw the close,
    # and every command of this client is a read, safe to send again on a fresh socket.
    client = async_client(settings, socket_timeout=None, socket_connect_timeout=1.0, health_check_interval=30,
                          max_connections=64, retry=Retry(NoBackoff(), 1))
    svc = Recommender(settings, cache, metrics, client)
    refresher = Refresher(settings, cache, metrics, content=svc.content)
    svc.content.wake = refresher.wake  # a PUT item is served by this process at once, by others within 1 s

    lifespan = _lifespan(settings, refresher, collector, svc, client, background)
    app = FastAPI(title="streamrec API", version="1", description=DESCRIPTION, lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
                  # No slash redirects: Starlette builds their Location from the client's Host header.
                  redirect_slashes=False, **NO_OTEL)
    app.state.settings, app.state.cache, app.state.refresher = settings, cache, refresher
    app.state.collector, app.state.service, app.state.metrics = collector, svc, metrics
    install_error_handlers(app)

    write_auth = require_key(settings.api_key_list)
    read_auth = [Depends(write_auth)] if settings.api_read_keys_required else []
    reads = read_router(settings, svc, read_auth)
    app.include_router(reads)
    app.include_router(write_router(settings, svc, collector, write_auth))
    install_event_schemas(app)  # the collector's bodies: the contract's msgspec schemas
    app.include_router(storefront_router(settings, svc, read_auth))  # the demo page, docs/storefront.md

    _operations_routes(app, cache, refresher, metrics)

    _middleware(app, settings, svc, route_named(reads, "recommendations"), write_auth, metrics)
    return app


def _lifespan(settings: Settings, refresher: Refresher, collector: Collector, svc: Recommender,
              client: aredis.Redis, background: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the background threads (model refresher, Kafka poll) with the app; stop them and close Redis."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background:
            # The refresher and Kafka threads hold the GIL in short bursts; a 1 ms switch interval (default
            # 5 ms) bounds how long a request can wait behind them.
            sys.setswitchinterval(0.001)
            refresher.start()
            collector.start()
        log.info("streamrec API up: model and catalogue load in the background")
        if not settings.api_key_list and not settings.api_ingest_key_list:
            log.warning("no API keys configured (STREAMREC_API_KEYS, STREAMREC_API_INGEST_KEYS): the collector "
                        "and catalogue writes answer 401 to everyone")
        elif not settings.api_key_list:
            log.warning("no admin API keys configured (STREAMREC_API_KEYS): catalogue writes answer 401 to "
                        "everyone; the collector takes the ingest keys")
        try:
            yield
        finally:
            await asyncio.to_thread(refresher.stop)
            await asyncio.to_thread(collector.stop)
            await svc.aclose()
            await client.aclose()

    return lifespan


def _operations_routes(app: FastAPI, cache: ModelCache, refresher: Refresher, metrics: ApiMetrics) -> None:
    """/healthz, /readyz and /metrics."""

    @app.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
    async def healthz() -> Health:
        """The process is up and serving (says nothing about Redis or Kafka)."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, tags=["operations"], summary="Readiness",
             responses={503: {"model": Ready, "description": "Redis unreachable or no model loaded"}})
    async def readyz() -> JSONResponse:
        """Ready when Redis answered within the last few seconds and a model version is loaded."""
        model = cache.view.model
        redis_ok = refresher.redis_ok and time.monotonic() - refresher.last_ok < READY_STALE_S
        ready = redis_ok and model is not None
        body = Ready(status="ready" if ready else "not ready", redis=redis_ok,
                     model_version=model.version if model else None)
        if ready:
            return JSONResponse(body.model_dump())
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """``streamrec_api_*`` metrics in the Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _middleware(app: FastAPI, settings: Settings, svc: Recommender, recommendations: Any, write_auth: Any,
                metrics: ApiMetrics) -> None:
    """The middleware stack, innermost first: the fast lane, CORS, HEAD as GET, the guard (outermost)."""
    # Innermost middleware (inside CORS and the metrics layer): plainly valid recommendation requests skip
    # FastAPI's routing and parameter machinery; everything else passes through.
    # Its parameter set comes from the route itself (fastpath.plan_for): it cannot drift from it.
    app.add_middleware(RecommendationsFastPath, svc=svc, route=recommendations,
                       handlers=app.exception_handlers, auth=write_auth if settings.api_read_keys_required else None)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list, allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "DELETE"], allow_headers=["Content-Type", HEADER],
                           expose_headers=["Retry-After", "Server-Timing"], max_age=600)
    app.add_middleware(HeadAsGet)  # HEAD on every GET route, the fast lane's included
    app.add_middleware(Guard, metrics=metrics, max_body_bytes=settings.max_body_bytes)  # outermost


def app_from_env() -> FastAPI:
    """The app configured from ``STREAMREC_*`` environment variables (uvicorn factory)."""
    logger = logging.getLogger("streamrec")
    if not logger.handlers:  # uvicorn configures only its own loggers; show ours the same way
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     [streamrec] %(message)s"))
        logger.addHandler(handler)
        # uvicorn has configured its loggers from --log-level by now: follow it
        logger.setLevel(logging.getLogger("uvicorn.error").getEffectiveLevel())
    try:
        return create_app(Settings())
    except WeakApiKey as exc:  # one line, not a traceback (``streamrec api`` checks before uvicorn starts)
        raise SystemExit(f"streamrec: api: {exc}") from None
