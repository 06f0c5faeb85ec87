"""Prometheus metrics of the API (``/metrics``), in a registry per app so tests can build several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Fine buckets below 10 ms: the latency target is a 5 ms p99.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    """Every ``streamrec_api_*`` metric."""

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
        self.model_swaps = Counter("streamrec_api_model_swaps_total", "Model versions loaded", registry=r)
        self.refresh_errors = Counter("streamrec_api_refresh_errors_total",
                                      "Failed background refreshes (model, catalogue, trending)", registry=r)
        self.redis_up = Gauge("streamrec_api_redis_up", "1 when Redis answered the last check", registry=r)
        # Pre-create the label sets so the fallback rate exists (as 0) before the first fallback.
        self.recommendations.labels("personal")
        self.recommendations.labels("fallback")
        for outcome in ("accepted", "invalid", "unavailable"):
            self.events.labels(outcome)
