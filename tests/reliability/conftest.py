"""Fixtures of the reliability suite (``make reliability``; deselected by ``make test``).

Every test here is marked ``reliability``. Scenarios that only load or kill streamrec processes use the
shared stack with isolated settings (own topics, group and Redis prefix, as the integration tests do);
scenarios that stop or wipe Kafka or Redis get a :class:`PrivateStack` of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.kafka_io import ensure_topics
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.integration.services import isolated_settings, real_services
from tests.reliability.procs import PrivateStack

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


def soak_seconds() -> float:
    """The soak's duration: ``STREAMREC_SOAK_S`` (default 600, the full 10 minutes)."""
    return float(os.environ.get("STREAMREC_SOAK_S", "600"))


@pytest.fixture(scope="session")
def endpoints() -> Iterator[tuple[str, str]]:
    with real_services() as (kafka, rds, where):
        print(f"\nreliability tests use {where}: kafka {kafka}, redis {rds}")
        yield kafka, rds


def _clean(settings: Settings) -> None:
    store = RedisStore(settings)
    try:
        keys = list(store.client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            store.client.delete(*keys[i : i + 500])
    except Exception as exc:  # the server may be gone (private stacks are stopped before this runs)
        print(f"could not clean {settings.redis_prefix}: {exc}")
    finally:
        store.close()


@pytest.fixture
def make_settings(endpoints: tuple[str, str], tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """Isolated settings on the shared stack (own topics, group, Redis prefix, snapshot dir); cleaned after."""
    made: list[Settings] = []

    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {"batch_snapshot_dir": tmp_path / f"snapshot-{len(made)}",
                                     "worker_metrics_port": 0, **overrides}
        s = isolated_settings(*endpoints, **values)  # type: ignore[arg-type]
        ensure_topics(s)
        made.append(s)
        return s

    yield factory
    for s in made:
        _clean(s)


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    """A Kafka and Redis of this module's own, on free ports: scenarios may stop, kill and wipe them."""
    stack = PrivateStack(tmp_path_factory.mktemp("private-stack"))
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def on_private(private_stack: PrivateStack, tmp_path: Path) -> Callable[..., Settings]:
    """Isolated settings on the private stack."""
    base = private_stack.settings

    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {"batch_snapshot_dir": tmp_path / "snapshot", "worker_metrics_port": 0,
                                     "stack_dir": base.stack_dir, "kafka_port": base.kafka_port,
                                     "kafka_controller_port": base.kafka_controller_port,
                                     "redis_port": base.redis_port, "kafka_libs_dir": base.kafka_libs_dir,
                                     **overrides}
        s = isolated_settings(base.kafka_bootstrap, base.redis_url, **values)
        ensure_topics(s)
        return s

    return factory
