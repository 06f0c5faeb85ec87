"""The API's background refresh: keeps a :class:`online_api.cache.ModelCache` current from Redis.

About once a second: the current model version (a new one loaded off the request path, and served once its
item index is built, :mod:`online_api.index_build`), items folded in since the refit, the catalogue
(unavailable items, categories), trending and popular items; then one new :class:`online_api.cache.View`
is published. Redis outages are survived: the previous view keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import redis

from online_api.cache import ModelCache, ServedModel, build_model
from online_api.content import ContentService
from online_api.index_build import IndexBuilder
from online_api.metrics import ApiMetrics
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import ModelVersion, current_version, load_model
from streamrec.store.trending import top_popular, top_trending

log = logging.getLogger("streamrec.api")

TREND_TOP = 200  # trending items kept for the blend and the fallback (beyond them trending counts as 0)
# The unavailable set and categories are re-read when their size changes, or at least this often (a write
# from another process that keeps the size, e.g. one item in and one out, shows within this time).
UNAVAILABLE_FULL_REFRESH_S = 5.0
CATEGORY_FULL_REFRESH_S = 30.0
# ... per 100,000 categorised items: re-reading a million (HGETALL, decoding, the per-category indices) holds
# the GIL for about a second, which every request then waits on, so big catalogues re-read less often.
CATEGORY_FULL_REFRESH_PER_ITEMS = 100_000
TREND_REFRESH_S = 2.0
POPULAR_REFRESH_S = 5.0


class Refresher:
    """Background thread keeping a :class:`ModelCache` current; survives Redis outages."""

    def __init__(self, settings: Settings, cache: ModelCache, metrics: ApiMetrics,
                 interval_s: float = 1.0, content: ContentService | None = None) -> None:
        self.settings, self.cache, self.metrics, self.interval_s = settings, cache, metrics, interval_s
        self.content = content  # its view is reloaded here when the version or its content changes
        self.store = RedisStore(settings)
        self.builder = IndexBuilder(settings)
        self._loading: ModelVersion | None = None  # a new version held while its index builds
        self.redis_ok = False
        self.last_ok = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by a write of this process (a PUT item): refresh now
        self._thread: threading.Thread | None = None
        self._cat_len = self._unavail_card = -1
        self._cat_read_at = self._unavail_at = self._trend_at = self._popular_at = -1e9

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="api-refresher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Refresh now rather than at the next tick (this process just wrote what the view should show)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.builder.close()
        self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def tick(self) -> None:
        """One refresh; errors are logged and counted, the previous view keeps serving."""
        try:
            self._refresh()
            self.redis_ok, self.last_ok = True, time.monotonic()
            self.metrics.redis_up.set(1)
        except redis.RedisError as exc:
            self.redis_ok = False
            self.metrics.redis_up.set(0)
            self.metrics.refresh_errors.inc()
            log.warning("refresh failed, serving the previous state: %s", exc)
        except Exception:  # a bad model payload must not kill the thread
            self.metrics.refresh_errors.inc()
            log.exception("refresh failed, serving the previous state")

    def _refresh(self) -> None:
        store, k = self.store, self.store.keys
        now = read_at = time.monotonic()
        model = self._model_update()
        self._content_update(model or self.cache.view.model)
        unavailable = catalogue = trending = popular = None
        # Cheap change detectors every tick (SCARD, HLEN); full reads only on a change or now and then.
        card = int(store.client.scard(k.unavailable))
        if card != self._unavail_card or now - self._unavail_at > UNAVAILABLE_FULL_REFRESH_S:
            unavailable = frozenset(m.decode() for m in cast(set[bytes], store.client.smembers(k.unavailable)))
            self._unavail_card, self._unavail_at = card, now
        cat_len = int(store.client.hlen(k.item_category))
        every = CATEGORY_FULL_REFRESH_S * max(1.0, cat_len / CATEGORY_FULL_REFRESH_PER_ITEMS)
        if cat_len != self._cat_len or now - self._cat_read_at > every:
            raw = cast(dict[bytes, bytes], store.client.hgetall(k.item_category))
            catalogue = {i.decode(): c.decode() for i, c in raw.items()}
            self._cat_len, self._cat_read_at = cat_len, now
            if self.cache.catalogue_unchanged(catalogue):
                catalogue = None  # nothing to rebuild (the per-category indices cost more than the read)
        skip = set(unavailable if unavailable is not None else self.cache.view.unavailable)
        if now - self._trend_at >= TREND_REFRESH_S:
            trending = top_trending(store, "1h", k=TREND_TOP, exclude=skip)
            self._trend_at = now
        if now - self._popular_at >= POPULAR_REFRESH_S:
            popular = top_popular(store, k=TREND_TOP, exclude=skip)
            self._popular_at = now
        if any(part is not None for part in (model, catalogue, unavailable, trending, popular)):
            self.cache.publish(model=model, catalogue=catalogue, unavailable=unavailable, trending=trending,
                               popular=popular, read_at=read_at)

    def _content_update(self, model: ServedModel | None) -> None:
        """Reload the cold-start view when the served version or its content counter changed; it follows the
        served model (a new version's content is swapped in with its model)."""
        if self.content is not None and model is not None:
            self.content.refresh(self.store, model.version)

    def _model_update(self) -> ServedModel | None:
        """A new :class:`ServedModel` when the current version, its folded-in items or its index changed.

        A new version is served once its index is built (the previous one serves meanwhile); at start-up
        (nothing served yet) it is served at once with the exact scan, and again with the index when built.
        """
        store, k = self.store, self.store.keys
        served = self.cache.view.model
        version = current_version(store)
        if version is None:
            return None
        new_raw = cast(dict[bytes, bytes], store.client.hgetall(k.model(version, "new_items")))
        model = None
        if served is None or served.version != version:
            loaded = self._loading if self._loading is not None and self._loading.version == version \
                else load_model(store, version)
            if loaded is None:
                return None
            ann, ready = self.builder.index_for(version, loaded.item_factors)
            self._loading = loaded if not ready and served is not None else None
            if ready or served is None:
                model = build_model(version, loaded.meta, loaded.item_ids, loaded.item_factors, loaded.gram, new_raw,
                                    ann, loaded.item_stats, self.builder.factors_for(version) if ann else None)
                self.metrics.model_swaps.inc()
                log.info("serving model %s (%d items, %s)", version, len(model.item_ids),
                         "exact scan" if ann is None else f"index {ann.dot.params.factory}")
        else:
            base = served.n_base
            ann = served.ann
            if ann is None and self.builder.wanted(version, base):  # the start-up build, or a failed one
                ann, _ = self.builder.index_for(version, served.factors[:base])
            if new_raw != served.new_items or ann is not served.ann:
                shared = served.base if ann is served.ann else self.builder.factors_for(version) if ann else None
                model = build_model(version, served.meta, served.item_ids[:base], served.factors[:base], served.gram,
                                    new_raw, ann, served.item_stats, shared)
        if model is not None:
            self.metrics.observe_model(model.version, model.meta, len(model.item_ids))
            self.metrics.index_items.set(model.ann.n_indexed if model.ann is not None else 0)
            self.metrics.index_build.set(model.ann.build_s if model.ann is not None else 0)
        return model
