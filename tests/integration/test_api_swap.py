"""Publishing a new model version while clients hammer the API: every answer is a 200 from one version."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import numpy as np

from models.foldin import gram
from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import activate, current_version, new_version_name, write_version


def test_a_model_swap_during_requests_causes_no_error(settings: Settings) -> None:
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=3_000, users=50, factors=32, seed=5))
    old = current_version(store)
    results: Counter[tuple[int, str | None]] = Counter()
    bad: list[str] = []
    v2_items = {f"v2-item-{i}" for i in range(3_000)}
    stop = threading.Event()

    def hammer(offset: int) -> None:
        with httpx.Client(base_url=api.url, timeout=5) as client:
            n = offset
            while not stop.is_set():
                user = users[n % len(users)]
                n += 1
                resp = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                body = resp.json() if resp.status_code == 200 else {}
                version = body.get("model_version")
                results[(resp.status_code, version)] += 1
                if resp.status_code != 200:
                    bad.append(resp.text)
                    continue
                ids = {i["item_id"] for i in body["items"]}
                # never a mix: the answer's items all belong to the version it names
                if (version == old) == bool(ids & v2_items):
                    bad.append(f"items of the wrong version in {body}")
                sim = client.get(f"/v1/items/item-{n % 3000}/similar", params={"k": 3})
                if sim.status_code not in (200, 404):  # 404: item-N is not in the new version
                    bad.append(sim.text)

    with ApiProcess(settings) as api:
        api.wait_for("/readyz")
        threads = [threading.Thread(target=hammer, args=(i * 7,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            # A new version with other item ids and new user vectors, published like the batch job does.
            rng = np.random.default_rng(9)
            y = rng.standard_normal((3_000, 32)).astype(np.float32)
            x = rng.standard_normal((len(users), 32)).astype(np.float32)
            version = new_version_name(time.time() + 1)
            write_version(store, version, {"synthetic": True}, sorted(v2_items), y, gram(y), users, x)
            activate(store, version)
            deadline = time.monotonic() + 15
            while not any(v == version for _, v in results) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not bad, bad[:3]
    assert results[(200, old)] > 0 and results[(200, version)] > 0, results
    assert {status for status, _ in results} == {200}
    store.close()
