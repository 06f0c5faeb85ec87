"""All runtime settings, read from the environment once per process.

Every variable is prefixed ``STREAMREC_`` (for example ``STREAMREC_KAFKA_BOOTSTRAP``). A process builds
one :class:`Settings` at start-up (``Settings()``) and passes it down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """Configuration for every streamrec process (worker, API, batch, simulator, local stack)."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers")
    topic_clicks: str = "streamrec.clicks"
    topic_purchases: str = "streamrec.purchases"
    topic_dead_letter: str = "streamrec.dead-letter"
    partitions: int = Field(8, ge=1, description="partition count for topics the project creates")
    consumer_group: str = "streamrec-worker"

    # --- Redis ---------------------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_prefix: str = Field("sr", description="prefix of every Redis key, so deployments can share a server")

    # --- Local stack (no Docker) -----------------------------------------------------------------
    stack_dir: Path = REPO_ROOT / ".stack"
    kafka_libs_dir: Path | None = Field(None, description="Kafka jar cache; default <stack_dir>/kafka-libs")
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    redis_port: int = 16379
    bind_host: str = "127.0.0.1"
    stack_timeout_s: float = 90.0
    kafka_heap: str = "768m"

    # --- Event validation --------------------------------------------------------------------------
    max_future_skew_s: float = Field(300.0, description="events stamped further in the future are rejected")

    @property
    def event_topics(self) -> list[str]:
        """The two event topics, clicks first."""
        return [self.topic_clicks, self.topic_purchases]

    def topic_for(self, event_type: str) -> str:
        """The topic an event of ``event_type`` belongs on."""
        return self.topic_purchases if event_type == "purchase" else self.topic_clicks
