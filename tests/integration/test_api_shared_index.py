"""Two API processes on one host (as two uvicorn workers): the second maps the item indexes and factors the
first built instead of building its own, both answer alike, a model swap moves both to the new version's
files, and the last process out leaves the directory empty."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from models.foldin import gram
from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import activate, new_version_name, write_version

N, F, USERS = 3_000, 32, 40


def metric(url: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics", timeout=5).text, re.M)
    return float(m.group(1)) if m else None


def serving(url: str) -> bool:
    """Whether the process serves through an index of the version's N items."""
    return metric(url, "streamrec_api_index_items") == N


def wait(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def answers(url: str, users: list[str]) -> list[tuple[str | None, list[str]]]:
    out = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for u in users:
            body = client.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()
            out.append((body["model_version"], [i["item_id"] for i in body["items"]]))
    return out


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_two_processes_share_one_copy_of_the_indexes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    where = tmp_path / "indexes"
    settings = make_settings(api_ann=True, api_ann_min_items=1_000, api_index_dir=str(where))
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=N, users=USERS, factors=F, seed=11, covis_neighbours=5))
    with ApiProcess(settings) as first:
        first.wait_for("/readyz")
        wait(lambda: serving(first.url))
        built = files(where)
        assert [n.rsplit(".", 2)[-2:] for n in built if not n.endswith((".json", ".lock"))] == [
            ["cosine", "faiss"], ["dot", "faiss"], ["factors", "f32"]]
        with ApiProcess(settings) as second:
            second.wait_for("/readyz")
            wait(lambda: serving(second.url))
            assert files(where) == built  # mapped what the first wrote: nothing written again
            # the build's own seconds, read from the files' metadata: the second did not build
            assert metric(second.url, "streamrec_api_index_build_seconds") == metric(
                first.url, "streamrec_api_index_build_seconds")
            assert answers(second.url, users[:20]) == answers(first.url, users[:20])

            rng = np.random.default_rng(3)
            y2 = rng.standard_normal((N, F)).astype(np.float32)
            x2 = rng.standard_normal((USERS, F)).astype(np.float32)
            version = new_version_name(time.time() + 1)
            write_version(store, version, {"synthetic": True}, [f"v2-item-{i}" for i in range(N)], y2, gram(y2),
                          users, x2)
            activate(store, version)
            wait(lambda: all(v == version for v, _ in answers(first.url, users[:3]) + answers(second.url, users[:3])))
            wait(lambda: files(where) != built and len(files(where)) == len(built))  # the old version's went
            assert all(f".{version}." in n for n in files(where))
            assert answers(second.url, users[:20]) == answers(first.url, users[:20])
        assert len(files(where)) == len(built)  # the first still serves them
    assert files(where) == []  # the last process out removed them
    store.close()
