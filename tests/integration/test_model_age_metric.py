"""The API's `streamrec_model_trained_timestamp_seconds` is when the model it *serves* was trained, on real
Kafka and Redis: a refit's `trained_at_ms`, a synthetic version's `vectors_at_ms`, and back to the older
version's time after `rollback` (which the batch job's last-success time cannot show)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from models.foldin import gram
from online_api.server import ApiProcess
from streamrec import simulate
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import activate, current_version, new_version_name, write_version

NAME = "streamrec_model_trained_timestamp_seconds"


def _scrape(api: ApiProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _served(api: ApiProcess, version: str, timeout_s: float = 20.0) -> float:
    """The gauge once the API reports serving ``version``."""
    deadline, last = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        last = _scrape(api)
        if last.get(("streamrec_api_model_info", (("version", version),))) == 1:
            return last[(NAME, ())]
        time.sleep(0.2)
    raise AssertionError(f"the API never served {version}: {sorted(k for k in last if 'model' in k[0])}")


def _meta(store: RedisStore, version: str) -> dict[str, Any]:
    raw = store.client.get(store.keys.model(version, "meta"))
    assert raw is not None
    meta: dict[str, Any] = json.loads(raw)
    return meta


def test_trained_timestamp_follows_the_served_model_through_a_rollback(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    from batch.admin import rollback
    from batch.refit import run_refit

    settings = make_settings(batch_snapshot_dir=tmp_path / "snapshot", als_factors=8, als_iterations=3)
    producer = EventProducer(settings)
    simulate.run(producer.send, rate=0, count=1_500,
                 store=simulate.Storefront(simulate.SimConfig(seed=7, users=200, items=150)))
    assert producer.flush(30) == 0
    store = RedisStore(settings)
    run_refit(settings)  # the real batch job: its meta has trained_at_ms
    refit = current_version(store)
    assert refit is not None
    trained = _meta(store, refit)["trained_at_ms"] / 1000

    with ApiProcess(settings, log_path=tmp_path / "api.log") as api:
        assert _served(api, refit) == trained

        # A synthetic version (no trained_at_ms): its vectors_at_ms stands in.
        y = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
        synthetic = new_version_name(time.time() + 1)
        write_version(store, synthetic, {"synthetic": True}, [f"s-{i}" for i in range(50)], y, gram(y), [],
                      np.zeros((0, 8), dtype=np.float32))
        activate(store, synthetic)
        meta = _meta(store, synthetic)
        assert "trained_at_ms" not in meta
        assert _served(api, synthetic) == meta["vectors_at_ms"] / 1000 > trained

        # Rolling back serves the refit again: the served model is as old as that refit, again.
        assert rollback(settings, store)["current"] == refit
        assert _served(api, refit) == trained
    store.close()
