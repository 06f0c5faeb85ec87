"""Where integration tests get real Kafka and Redis, in this order:

1. endpoints given in the environment (``STREAMREC_TEST_KAFKA_BOOTSTRAP`` and ``STREAMREC_TEST_REDIS_URL``);
2. testcontainers, when a Docker engine answers;
3. otherwise the project's local stack (``streamrec stack up``).

With ``STREAMREC_TEST_REDIS_CLUSTER=1`` (``make test-cluster``) Redis is the local stack's Redis Cluster of
3 masters with 1 replica each (``stack up --redis-cluster``), named by a ``redis+cluster://`` URL, so every
client of the tests and of the processes they start is redis-py's cluster client.

If none can start, the tests fail: integration tests are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from streamrec.settings import Settings


def docker_engine_answers() -> bool:
    """True when a Docker engine answers a ping (the client alone is not enough)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@contextlib.contextmanager
def _testcontainers() -> Iterator[tuple[str, str]]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka, RedisContainer("redis:7") as rds:
        host, port = rds.get_container_host_ip(), rds.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"


@contextlib.contextmanager
def real_services() -> Iterator[tuple[str, str, str]]:
    """Yields (kafka_bootstrap, redis_url, where) for a session of tests."""
    kafka, rds = os.environ.get("STREAMREC_TEST_KAFKA_BOOTSTRAP"), os.environ.get("STREAMREC_TEST_REDIS_URL")
    if os.environ.get("STREAMREC_TEST_REDIS_CLUSTER") == "1":
        from streamrec.localstack import LocalStack, main_progress

        base = Settings()
        LocalStack(base, progress=main_progress).up(redis_cluster=True)
        yield base.kafka_bootstrap, f"redis+cluster://{base.bind_host}:{base.redis_cluster_port}/0", "redis cluster"
        return
    if kafka and rds:
        yield kafka, rds, "environment"
        return
    if docker_engine_answers():
        with _testcontainers() as (kafka, rds):
            yield kafka, rds, "testcontainers"
        return
    from streamrec.localstack import LocalStack, main_progress

    base = Settings()
    LocalStack(base, progress=main_progress).up()  # raises StackError with the server log tail on failure
    yield base.kafka_bootstrap, base.redis_url, "local stack"


def isolated_settings(kafka: str, rds: str, **overrides: object) -> Settings:
    """Settings with topic names, consumer group and Redis prefix of their own, so tests never share state."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "kafka_bootstrap": kafka,
        "redis_url": rds,
        "topic_clicks": f"t-{tag}.clicks",
        "topic_purchases": f"t-{tag}.purchases",
        "topic_dead_letter": f"t-{tag}.dead-letter",
        "consumer_group": f"g-{tag}",
        "redis_prefix": f"test-{tag}",
        "partitions": 4,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
