"""Fixtures giving integration tests real Kafka and Redis (see services.py for where they come from)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.kafka_io import ensure_topics
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.helpers.processes import Started, started
from tests.integration.services import isolated_settings, real_services


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def endpoints() -> Iterator[tuple[str, str]]:
    with real_services() as (kafka, rds, where):
        print(f"\nintegration tests use {where}: kafka {kafka}, redis {rds}")
        yield kafka, rds


@pytest.fixture
def make_settings(endpoints: tuple[str, str]) -> Iterator[Callable[..., Settings]]:
    """Builds isolated settings (own topics, group and Redis prefix); cleans their Redis keys after."""
    made: list[Settings] = []

    def factory(**overrides: object) -> Settings:
        s = isolated_settings(*endpoints, **overrides)
        ensure_topics(s)
        made.append(s)
        return s

    yield factory
    for s in made:
        store = RedisStore(s)
        keys = list(store.client.scan_iter(f"{s.redis_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            store.client.delete(*keys[i : i + 500])
        store.close()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Started]:
    """Starts processes for the test (logs under tmp_path); stops them after it."""
    with started(tmp_path) as procs:
        yield procs
