"""All runtime settings, read from the environment once per process.

Every variable is prefixed ``STREAMREC_`` (for example ``STREAMREC_KAFKA_BOOTSTRAP``). A process builds
one :class:`Settings` at start-up (``Settings()``) and passes it down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.event_types import EventType, type_named

if TYPE_CHECKING:
    from models.content import ContentConfig
    from models.weighting import WeightingConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Configuration for every streamrec process (worker, API, batch, simulator, local stack)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    topic_clicks: str = Field("streamrec.clicks", description="topic of browse events: view, click, add_to_cart")
    topic_purchases: str = Field("streamrec.purchases", description="topic of purchase events")
    topic_dead_letter: str = Field("streamrec.dead-letter", description="invalid events with their reason")
    partitions: int = Field(8, ge=1, description="partition count of the event topics (the project creates them "
                            "with it): the Redis key layout follows it, every user's state sits under the hash tag "
                            "of the user's murmur2 partition; after changing it run `streamrec migrate-layout`")
    consumer_group: str = Field("streamrec-worker", description="the workers' Kafka consumer group")

    # --- Redis ---------------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:16379/0", description="Redis connection URL")
    redis_cluster: bool = Field(False, description="the Redis URL names one node of a Redis Cluster: every "
                                "process uses redis-py's cluster clients (a `redis+cluster://` or "
                                "`rediss+cluster://` URL does the same); a cluster has database 0 only")
    redis_wait_replicas: int = Field(1, ge=0, description="Redis Cluster: after a batch's transactions the worker "
                                     "WAITs (once per node) until this many replicas have them (at most "
                                     "STREAMREC_REDIS_WAIT_MS), so a failover does not lose what Kafka then "
                                     "commits; 0 for a cluster without replicas")
    redis_wait_ms: int = Field(1000, ge=1, description="Redis Cluster: the longest the worker WAITs for replicas "
                               "after a transaction (then it goes on and counts it in "
                               "streamrec_worker_unreplicated_total)")
    redis_prefix: str = Field("sr", description="prefix of every Redis key, so deployments can share a server")

    # --- Local stack (no Docker) -----------------------------------------------------------------
    stack_dir: Path = Field(REPO_ROOT / ".stack", description="local stack data, logs and caches")
    kafka_libs_dir: Path | None = Field(None, description="Kafka jar cache; default <stack_dir>/kafka-libs")
    kafka_port: int = Field(19092, description="local stack: Kafka listener port")
    kafka_controller_port: int = Field(19093, description="local stack: KRaft controller port")
    redis_port: int = Field(16379, description="local stack: Redis port")
    redis_cluster_port: int = Field(17000, ge=1, le=55530, description="local stack: first port of the Redis "
                                    "Cluster of `stack up --redis-cluster` (3 masters, 1 replica each): its 6 "
                                    "nodes take this port and the 5 after it, their cluster buses the same + 10000")
    bind_host: str = Field("127.0.0.1", description="local stack: address the servers bind")
    stack_timeout_s: float = Field(90.0, description="local stack: how long to wait for a server to be ready")
    kafka_heap: str = Field("768m", description="local stack: Kafka JVM heap")

    # --- Event validation --------------------------------------------------------------------------
    max_future_skew_s: float = Field(300.0, description="events stamped further in the future are rejected")

    # --- Model and batch refit (models/, batch/) -------------------------------------------------------
    als_factors: int = Field(64, ge=2, description="latent factors of the ALS model")
    als_regularization: float = Field(0.05, ge=0, description="ALS L2 regularization")
    als_alpha: float = Field(2.0, gt=0, description="confidence scale applied to interaction weights")
    als_iterations: int = Field(15, ge=1, description="ALS iterations per refit")
    # One <type>_weight per registry type (models/event_types.py); the defaults are the registry's.
    view_weight: float = Field(EventType.VIEW.default_weight, ge=0, description="interaction weight of a view "
                               "(a product page seen)")
    click_weight: float = Field(EventType.CLICK.default_weight, ge=0, description="interaction weight of a click")
    add_to_cart_weight: float = Field(EventType.ADD_TO_CART.default_weight, ge=0,
                                      description="interaction weight of an add-to-cart")
    purchase_weight: float = Field(EventType.PURCHASE.default_weight, ge=0,
                                   description="interaction weight of a purchase")
    half_life_days: float | None = Field(None, gt=0, description="time decay of interaction weights; none if unset")
    batch_snapshot_dir: Path | None = Field(None, description="local snapshot of aggregated interactions; "
                                            "default <stack_dir>/batch")
    model_grace_s: float = Field(900.0, ge=0, description="old model versions are removed after this long")
    batch_metrics_port: int = Field(9102, description="batch --every: Prometheus /metrics port")
    batch_read_processes: int = Field(2, ge=1, description="processes reading Kafka in a refit (capped at cores)")

    # --- Streaming worker (stream_processors/) -----------------------------------------------------------
    worker_batch_size: int = Field(4_000, ge=1, description="most events folded in per batch")
    worker_batch_within_s: float = Field(0.1, gt=0, description="longest wait to fill a batch, from when its "
                                         "oldest event was produced")
    worker_delivery: Literal["batch", "stream"] = Field(
        "batch", description="how the worker's Faust consumer hands records over: `batch` (whole fetches, "
        "acknowledged per batch; about 20 µs less CPU per event) or `stream` (Faust's agent stream, per event; it "
        "lost an event across a rebalance in a test: not exactly-once there, use `batch`)")
    history_cap: int = Field(200, ge=1, description="interactions kept per user, oldest dropped first")
    new_item_min_interactions: int = Field(3, ge=1, description="interactions before a new item is folded in")
    dedup_window_s: int = Field(3_600, ge=60, description="how long an event_id is remembered for de-duplication")
    worker_metrics_port: int = Field(9101, description="worker: Prometheus /metrics port")
    worker_web_port: int = Field(6066, description="worker: Faust web port (loopback)")
    worker_cache_users: int = Field(100_000, ge=0, description="users whose history a worker keeps in memory "
                                    "(validated against Redis every batch; 0 reads every history)")
    worker_covisitation: bool = Field(False, description="the worker keeps item-to-item co-visitation for the "
                                      "hybrid ranking (STREAMREC_COVIS_*); false skips it")
    worker_shutdown_grace_s: float = Field(10.0, gt=0, le=120, description="a stopping worker (SIGTERM) abandons "
                                           "a batch it is retrying and exits within this long")
    worker_session_timeout_s: float = Field(10.0, ge=6, description="a worker silent this long (crashed) loses "
                                            "its partitions to the others")

    # --- Hybrid ranking (models/ranking.py, models/covisitation.py) -------------------------------------
    rank_weight_personal: float = Field(1.0, description="hybrid blend weight of the ALS personal scores (each "
                                        "source is divided by its best candidate's score first)")
    rank_weight_covisitation: float = Field(1.0, description="hybrid blend weight of the co-visitation neighbours "
                                            "of the session's last items")
    rank_weight_repeat: float = Field(1.0, description="hybrid blend weight of the user's repeat profile (decayed "
                                      "frequency of the user's own items)")
    rank_weight_trending: float = Field(0.3, description="hybrid blend weight of the trending list")
    rank_weight_popular: float = Field(0.05, description="hybrid blend weight of the popular list")
    rank_weight_content: float = Field(0.5, description="hybrid blend weight of the new arrivals whose catalogue "
                                       "content is most like the user's history (with a content model)")
    rank_arrival_slots: int = Field(0, ge=0, le=10, description="the hybrid list's last positions kept for the "
                                    "best new arrivals like the user's history (the content source; with a "
                                    "content model): new products are seen before they have interactions")
    rank_arrival_min_score: float = Field(0.0, ge=0, le=1, description="the content score (mean cosine with the "
                                          "user's history) a new arrival needs for one of those positions")
    rank_model_min_history: int = Field(0, ge=0, description="users with fewer history entries than this are "
                                        "ordered by the blend instead of the learned ranker (1: users without "
                                        "history)")
    rank_candidates: int = Field(100, ge=1, description="candidates taken from each source before blending")
    rank_model_file: str | None = Field(None, description="a learned ranker (LightGBM text model written by "
                                        "`streamrec eval --write-settings`); the hybrid orders its candidates by "
                                        "it instead of the weighted blend, and names each item's source by its "
                                        "largest normalised feature; unset: the blend")
    rank_exclude_seen: bool = Field(True, description="default of exclude_seen for recommendations (false for "
                                    "groceries and other repeat purchases)")
    session_items: int = Field(3, ge=1, description="newest distinct items of the user whose co-visitation "
                               "neighbours are candidates")
    session_decay: float = Field(0.5, gt=0, le=1, description="weight of the n-th newest session item: decay^n")
    repeat_half_life_s: float | None = Field(604_800.0, gt=0, description="half-life of the repeat profile's "
                                             "decayed frequency; none: plain counts")
    covis_window_s: float = Field(3_600.0, gt=0, description="co-visitation: an event pairs with the user's "
                                  "previous items at most this much older")
    covis_max_prev: int = Field(5, ge=1, description="co-visitation: previous items an event pairs with")
    covis_distance_decay: float = Field(0.7, gt=0, description="co-visitation: weight of the d-th previous item "
                                        "is decay^(d-1)")
    covis_purchase_factor: float = Field(3.0, ge=0, description="co-visitation: a pair whose later event is a "
                                         "purchase counts this much more (click then purchase)")
    covis_backward_weight: float = Field(0.5, ge=0, description="co-visitation: weight of the reverse pair "
                                         "(later item to earlier item; 1 is symmetric)")
    covis_half_life_s: float = Field(86_400.0, gt=0, description="co-visitation: half-life of pair weights (news: "
                                     "hours, groceries: weeks)")
    covis_top_n: int = Field(50, ge=1, description="co-visitation: neighbours kept per item (trimmed at twice this)")

    # --- Cold start: catalogue content and user profiles (models/content.py, models/ridge.py) -----------
    content_text_fields: str = Field("title,name,description", description="comma-separated item attributes "
                                     "read as free text (TF-IDF); other text and boolean attributes are categorical")
    content_tag_fields: str = Field("tags", description="comma-separated attributes holding comma-separated tags")
    content_max_terms: int = Field(2_000, ge=1, description="TF-IDF vocabulary size (the most frequent terms)")
    content_hash_buckets: int = Field(512, ge=8, description="hashed columns of the categorical attributes")
    content_numeric_bins: int = Field(8, ge=2, description="quantile bins of each numeric attribute")
    content_min_interactions: int = Field(5, ge=1, description="items with at least this many interacting users "
                                          "train the regression from content to item factors at refit")
    content_ridge_alpha: float = Field(1.0, gt=0, description="L2 penalty of the content regression")
    content_neighbours_max_items: int = Field(200_000, ge=0, description="the refit publishes every item's "
                                              "content neighbours up to this many catalogue items (its cost "
                                              "grows with the square); above it the API scans per item")
    content_prior_interactions: float = Field(3.0, ge=0, description="a new item's content vector counts as this "
                                              "many interactions when its folded-in vector is blended with it")
    rank_content_neighbours: bool = Field(True, description="hybrid: content neighbours stand in for the "
                                          "co-visitation neighbours of session items that have none (new items)")
    profile_min_interactions: int = Field(3, ge=1, description="users with at least this many items train the "
                                          "regression from profile to user factors at refit")
    profile_ridge_alpha: float = Field(1.0, gt=0, description="L2 penalty of the profile regression")
    profile_fade_events: int = Field(10, ge=0, description="a user's profile vector fades linearly from full "
                                     "weight (no events) to none at this many events of theirs")

    # --- Online API (online_api/) ------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="API bind address")
    api_port: int = Field(8000, description="API port")
    api_keys: str = Field("", description="comma-separated keys with full access: catalogue writes, the collector, "
                          "and reads when they need a key. The API refuses to start with a guessable one (a "
                          "well-known default, under 16 characters); docs/api.md#security")
    api_ingest_keys: str = Field("", description="comma-separated keys accepted only by the collector (POST "
                                 "/v1/events and /v1/events:batch), e.g. a browser's public key; catalogue writes "
                                 "and keyed reads refuse them (403)")
    api_read_keys_required: bool = Field(False, description="require a key for reads too")
    cors_origins: str = Field("", description="comma-separated storefront origins allowed by CORS")
    api_hybrid: bool = Field(True, description="recommendations rank every source with models.ranking (personal, "
                             "co-visitation, repeat, trending, popular; STREAMREC_RANK_*); false: the ALS-only path "
                             "(personal scores blended with trending by blend_weight, then the trending/popular "
                             "fallback)")
    blend_weight: float = Field(0.2, ge=0, le=1, description="share of trending blended into personal scores (the "
                                "ALS-only path, api_hybrid=false)")
    similar_weight_covisitation: float = Field(1.0, ge=0, description="similar?kind=blend: weight of the "
                                               "co-visitation neighbours (divided by the best one's score)")
    similar_weight_factors: float = Field(1.0, ge=0, description="similar?kind=blend: weight of the factors' "
                                          "cosine similarity (divided by the best one's)")
    api_ann: bool = Field(True, description="serve big catalogues through an approximate nearest-neighbour index "
                          "(faiss) re-ranked exactly; false: always the exact scan (docs/operations.md#the-item-index)")
    api_ann_min_items: int = Field(20_000, ge=1, description="the index is built for model versions with at least "
                                   "this many refit items; smaller catalogues are scanned exactly")
    api_ann_index: str = Field("IVF2048,Flat", description="faiss index factory string of the item index of "
                               "recommendations (inner product, searched as L2 on rows extended to one length; "
                               "an IVF list count is capped at items/64)")
    api_ann_search: str = Field("nprobe=64", description="its faiss search parameters (IVF: nprobe=N; HNSW: "
                                "efSearch=N)")
    api_ann_similar_index: str = Field("IVF1024,Flat", description="faiss index factory string of the item index "
                                       "of similar items (over unit rows: cosine)")
    api_ann_similar_search: str = Field("nprobe=16", description="its faiss search parameters")
    api_ann_min_fetch: int = Field(200, ge=1, description="candidates asked of the index at least, then re-ranked "
                                   "exactly (more: higher recall, slower)")
    api_ann_max_fetch: int = Field(4_096, ge=1, description="a request whose filters would need more candidates "
                                   "than this (a small category) is scanned exactly instead")
    api_index_dir: str = Field("/dev/shm/streamrec", description="where the API processes of a host share the "
                               "item indexes (built once, mapped by every uvicorn worker; a memory file system); "
                               "empty: each process builds its own (docs/operations.md#the-item-index)")
    max_k: int = Field(100, ge=1, description="largest k a request may ask for")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body (413 beyond)")
    api_produce_timeout_s: float = Field(5.0, gt=0, le=60, description="longest wait for Kafka to acknowledge "
                                         "posted events before answering 503")

    # --- Storefront demo page (online_api/storefront.py) ------------------------------------------------
    storefront_ingest_key: str = Field("", description="API key the storefront page posts its events with; it is "
                                       "public (served to every browser): use a key of its own, rate-limited at "
                                       "the edge. Must be one of STREAMREC_API_INGEST_KEYS and not of "
                                       "STREAMREC_API_KEYS (the page never hands out a full-access key). Empty: "
                                       "the page is read-only")
    storefront_poll_ms: int = Field(1000, ge=200, description="how often the storefront page refreshes its rails")

    # --- Metrics ---------------------------------------------------------------------------------------
    metrics_host: str = Field("127.0.0.1", description="address the /metrics servers bind")
    lag_exporter_port: int = Field(9103, description="port of `streamrec lag --serve` (consumer lag exporter)")
    lag_window: int = Field(10, ge=2, description="commit observations per partition in the lag status window")
    lag_stall_s: float = Field(30.0, gt=0, description="committed offsets unmoved this long while lagging: STALLED")

    @property
    def snapshot_dir(self) -> Path:
        """Where the batch job keeps its compacted interaction snapshot."""
        return Path(self.batch_snapshot_dir) if self.batch_snapshot_dir else Path(self.stack_dir) / "batch"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def api_ingest_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_ingest_keys.split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def event_topics(self) -> list[str]:
        """The event topics of the registry's types, each once, in registry order (clicks first)."""
        return list(dict.fromkeys(str(getattr(self, t.topic)) for t in EventType))

    def topic_for(self, event_type: str) -> str:
        """The topic an event of ``event_type`` belongs on (the registry's topic setting)."""
        return str(getattr(self, type_named(event_type).topic))

    @property
    def type_weights(self) -> dict[str, float]:
        """The interaction weight of each registry type: its ``<type>_weight`` setting."""
        return {t.value: float(getattr(self, t.weight_setting)) for t in EventType}

    def weighting(self, half_life_s: float | None = None) -> WeightingConfig:
        """The type weights of these settings with time decay ``half_life_s`` (None: no decay)."""
        from models.weighting import WeightingConfig  # numpy and scipy: only for the processes that weigh

        return WeightingConfig(self.type_weights, half_life_s)

    def content_config(self, *, profiles: bool = False) -> ContentConfig:
        """How catalogue items (or, with ``profiles``, user profiles: no text, no tags) become features."""
        from models.content import ContentConfig  # scikit-learn: only for the processes that featurize

        def names(csv: str) -> tuple[str, ...]:
            return tuple(n.strip() for n in csv.split(",") if n.strip())

        return ContentConfig(text_fields=() if profiles else names(self.content_text_fields),
                             tag_fields=() if profiles else names(self.content_tag_fields),
                             max_terms=self.content_max_terms, hash_buckets=self.content_hash_buckets,
                             numeric_bins=self.content_numeric_bins)
