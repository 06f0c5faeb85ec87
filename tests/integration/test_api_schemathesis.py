"""Schemathesis over the live OpenAPI: generated valid and invalid requests never get a 5xx.

Every operation gets a bounded number of positive (schema-valid) and negative (schema-breaking) cases,
sent with a valid API key so the write paths run too (posted events go to this test's own topics).
Besides "no server error", responses must use documented status codes and content types and match
their documented schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.store import RedisStore
from tests.integration.services import isolated_settings

KEY = "fuzz-key-0123456789abcdef"
EXAMPLES = 20  # per operation and mode: bounded, the whole run takes well under a minute
UVICORN_REJECTS = b"Invalid HTTP request received."
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live(endpoints: tuple[str, str]) -> Iterator[ApiProcess]:
    s = isolated_settings(*endpoints, api_keys=KEY, api_produce_timeout_s=5.0)
    from streamrec.kafka_io import ensure_topics

    ensure_topics(s)
    store = RedisStore(s)
    publish_synthetic(store, BenchConfig(items=200, users=20, factors=8, seed=11))
    try:
        with ApiProcess(s) as api:
            api.wait_for("/readyz")
            yield api
    finally:
        keys = list(store.client.scan_iter(f"{s.redis_prefix}:*", count=1000))
        if keys:
            store.client.delete(*keys)
        store.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx(live: ApiProcess, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            label = f"{case.operation.method.upper()} {case.operation.path}"
            response = case.call(base_url=live.url, headers={"X-API-Key": KEY}, timeout=15)
            if response.status_code == 400 and response.content == UVICORN_REJECTS:
                return  # uvicorn refused a malformed HTTP request line before the app saw it: not our 4xx
            try:
                case.validate_response(response, checks=CHECKS, headers={"X-API-Key": KEY})
            except AssertionError as exc:  # collect, so one run reports every failing operation
                failures.append(f"{label}: {str(exc)[:500]}")
            except Exception as exc:  # schemathesis raises its own failure types
                failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:500]}")

        try:
            run()
        except Unsatisfiable:  # nothing to break: the operation takes no input (e.g. /healthz)
            assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
