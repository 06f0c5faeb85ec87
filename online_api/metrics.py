"""Prometheus metrics of the API (``/metrics``), in a registry per app so tests can build several."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Fine buckets below 10 ms: the latency target is a 5 ms p99.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def trained_timestamp(meta: Mapping[str, Any]) -> float | None:
    """When a model version was trained, in epoch seconds, from its meta; None when the meta does not say.

    ``trained_at_ms`` is what the refit writes. Versions written some other way (synthetic or benchmark
    ones) lack it, so ``vectors_at_ms`` stands in: ``write_version`` stamps it on every version when it
    writes the factors, seconds after a refit's ``trained_at_ms``, so the model's age stays measured (and
    alertable) whatever wrote the version.
    """
    for key in ("trained_at_ms", "vectors_at_ms"):
        value = meta.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value) / 1000
    return None


class ApiMetrics:
    """Every ``streamrec_api_*`` metric, and ``streamrec_model_trained_timestamp_seconds``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "streamrec_api_request_duration_seconds", "Time from request to response, in the app",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.recommendations = Counter(
            "streamrec_api_recommendations_total",
            "Recommendation answers by kind: personal, or fallback (trending/popular because the user "
            "has no vector); the fallback rate is fallback / (personal + fallback)", ["kind"], registry=r)
        self.events = Counter("streamrec_api_events_total", "Collector outcomes: accepted counts events "
                              "acknowledged by Kafka; invalid (422) and unavailable (503) count requests",
                              ["outcome"], registry=r)
        self.model = Info("streamrec_api_model", "The model version being served", registry=r)
        self.model_items = Gauge("streamrec_api_model_items", "Items scored (refit plus folded-in new items)",
                                 registry=r)
        self.model_loaded = Gauge("streamrec_api_model_loaded_timestamp_seconds",
                                  "When the serving model version was loaded", registry=r)
        # Named without `_api_`: it describes the model, as seen where it is served. 0 until a model is
        # served (and for a version whose meta has no timestamp): alerts leave 0 out.
        self.model_trained = Gauge(
            "streamrec_model_trained_timestamp_seconds",
            "When the model version this API serves was trained (meta trained_at_ms, else vectors_at_ms); "
            "0 while unknown. Its age is time() minus this; it goes back on a rollback", registry=r)
        self.index_items = Gauge("streamrec_api_index_items", "Items in the served model's approximate index "
                                 "(0: the exact scan serves; docs/operations.md#the-item-index)", registry=r)
        self.index_build = Gauge("streamrec_api_index_build_seconds", "How long the served model's index took to "
                                 "build (0 without one)", registry=r)
        self.model_swaps = Counter("streamrec_api_model_swaps_total", "Model versions loaded", registry=r)
        self.refresh_errors = Counter("streamrec_api_refresh_errors_total",
                                      "Failed background refreshes (model, catalogue, trending)", registry=r)
        self.redis_up = Gauge("streamrec_api_redis_up", "1 when Redis answered the last check", registry=r)
        # Pre-create the label sets so the fallback rate exists (as 0) before the first fallback.
        self.recommendations.labels("personal")
        self.recommendations.labels("fallback")
        for outcome in ("accepted", "invalid", "unavailable"):
            self.events.labels(outcome)

    def observe_model(self, version: str, meta: Mapping[str, Any], n_items: int) -> None:
        """Describe the model now served (a new version, a rollback, or new items folded into the same one)."""
        self.model.info({"version": version})
        self.model_items.set(n_items)
        self.model_loaded.set_to_current_time()
        trained = trained_timestamp(meta)
        # 0, not the previous version's value, when this one's meta says nothing: a stale age is worse.
        self.model_trained.set(trained if trained is not None else 0)
