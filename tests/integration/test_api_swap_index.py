"""A model swap while clients hammer the API with the item index on: every answer is a 200 of one version, and
each version's personal items come from that version's own index (never the other's)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np

from models.foldin import gram
from models.scoring import top_k
from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import (
    activate,
    current_version,
    get_user_vectors,
    load_model,
    new_version_name,
    write_version,
)

N, F, USERS = 3_000, 32, 50
TOP = 150  # a personal item is among the version's exact top TOP for the user (the hybrid keeps 100)


def index_items(url: str) -> float:
    m = re.search(r"^streamrec_api_index_items (\S+)$", httpx.get(url + "/metrics", timeout=5).text, re.M)
    return float(m.group(1)) if m else -1.0


def wait(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def exact_top(y: np.ndarray, x: np.ndarray) -> list[set[int]]:
    return [set(top_k(y @ u, TOP).tolist()) for u in x]


def test_a_model_swap_under_load_with_the_index_on(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_ann=True, api_ann_min_items=1_000)
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=N, users=USERS, factors=F, seed=5, covis_neighbours=5))
    old = current_version(store)
    v1 = load_model(store, old)
    assert v1 is not None
    x1 = np.stack(get_user_vectors(store, old, users))
    rng = np.random.default_rng(9)
    y2 = rng.standard_normal((N, F)).astype(np.float32)
    x2 = rng.standard_normal((USERS, F)).astype(np.float32)
    v2_ids = sorted(f"v2-item-{i}" for i in range(N))
    tops = {old: (v1.item_index, exact_top(v1.item_factors, x1))}
    results: Counter[tuple[int, str | None]] = Counter()
    bad: list[str] = []
    stop = threading.Event()

    def check(body: dict, u: int) -> None:
        version = body.get("model_version")
        if version not in tops:
            return
        index, best = tops[version]
        for item in body["items"]:
            i = index.get(item["item_id"])
            if i is None and version == old:
                bad.append(f"an item of another version in {body}")
            if item["source"] == "personal" and i is not None and i not in best[u]:
                bad.append(f"personal item {item['item_id']} outside the exact top {TOP} of {version}")

    def hammer(offset: int) -> None:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            n = offset
            while not stop.is_set():
                u = n % USERS
                n += 1
                resp = client.get(f"/v1/users/{users[u]}/recommendations", params={"k": 10})
                results[(resp.status_code, resp.json().get("model_version") if resp.status_code == 200 else None)] += 1
                if resp.status_code != 200:
                    bad.append(resp.text)
                    continue
                check(resp.json(), u)
                sim = client.get(f"/v1/items/item-{n % N}/similar", params={"k": 3, "kind": "factors"})
                if sim.status_code not in (200, 404):  # 404: item-N is not in the new version
                    bad.append(sim.text)

    with ApiProcess(settings) as api:
        api.wait_for("/readyz")
        wait(lambda: index_items(api.url) == N)  # the first version is served through its index
        threads = [threading.Thread(target=hammer, args=(i * 7,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            version = new_version_name(time.time() + 1)
            v2_index = {item: i for i, item in enumerate(v2_ids)}
            tops[version] = (v2_index, exact_top(y2, x2))
            write_version(store, version, {"synthetic": True}, v2_ids, y2, gram(y2), users, x2)
            activate(store, version)
            wait(lambda: any(v == version for _, v in results), 30)
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert index_items(api.url) == N  # after the swap too: the new version's own index
    assert not bad, bad[:3]
    assert results[(200, old)] > 0 and results[(200, version)] > 0, results
    assert {status for status, _ in results} == {200}
    store.close()
