"""`streamrec bench api`: recommendations through HTTP from one uvicorn worker, and the in-process floor.

1. Publishes a synthetic model (``items`` × ``factors``, ``users`` user vectors with histories, a catalogue
   with categories and some unavailable items, trending counts) under a private Redis prefix.
2. Starts ``streamrec api`` (one uvicorn worker, as in production) on a free loopback port.
3. Drives ``GET /v1/users/{u}/recommendations?k=10`` with a closed-loop keep-alive load generator running
   in this process, and reads the server-side time of every request from its ``Server-Timing`` header.
4. Measures the same work in-process, without HTTP: the service call (one Redis round trip, scoring) and
   the JSON encoding of its answer.

The last line (with ``--json``) is ``{"rps", "p50_ms", "p99_ms", "inprocess_p99_ms", "items"}``: rps is
the throughput reached, p50/p99 the server-side latency under that load. Load generator and server share
the machine, so on a 2-core box each gets about one core.

The API serves what the settings say (the hybrid by default; every synthetic user has co-visitation
hashes for their items, so the hybrid reads and ranks every source). Each compared path below is its own
API process on the same data and requests, and every process gets its seconds in turns, process after
process (:func:`ops.bench_lanes.drive`), so a drift of a shared machine weighs on all alike.
With ``--compare-als`` the same run also drives a second API process with ``STREAMREC_API_HYBRID=false``
(the ALS-only path) on the same data
and adds ``"als": {"rps", "p50_ms", "p99_ms"}``, ``"p99_ratio"`` and ``"rps_ratio"`` (served / ALS-only).
With ``--compare-content`` the version also gets content and profile models and some users profiles
(:mod:`ops.bench_api_content`), and a second process with the content sources off adds
``"without_content": {"rps", "p50_ms", "p99_ms"}`` and ``"content_p99_ratio"`` (with / without).
With ``--compare-cluster`` the same data is published on the local Redis Cluster and a second process
serving from it adds ``"cluster": {"rps", "p50_ms", "p99_ms"}``, ``"cluster_p99_ratio"`` and
``"cluster_rps_ratio"`` (cluster / single Redis).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np

from online_api.loadgen import LoadResult
from online_api.server import ApiProcess
from ops.bench_lanes import ROUNDS, Lane, drive, load
from streamrec.settings import Settings
from streamrec.store import RedisStore

HISTORY = (10, 60)  # interactions per synthetic user
CATEGORIES = 20
UNAVAILABLE_SHARE = 0.01


@dataclass(frozen=True)
class BenchConfig:
    items: int = 50_000
    users: int = 5_000
    factors: int = 64
    duration_s: float = 10.0
    connections: int = 2
    inprocess_requests: int = 3_000
    seed: int = 7
    covis_neighbours: int = 20  # co-visitation neighbours written per item
    compare_als: bool = False
    compare_content: bool = False
    compare_cluster: bool = False


def _say(msg: str) -> None:
    print(f"[bench api] {msg}", file=sys.stderr, flush=True)


def publish_synthetic(store: RedisStore, cfg: BenchConfig, settings: Settings | None = None) -> list[str]:
    """Write a model version, histories, catalogue and trending (and with ``compare_content`` content and
    profile models, fitted with ``settings``' content settings); returns the user ids."""
    from models.foldin import gram
    from streamrec.events import now_ms
    from streamrec.store.catalog import put_items
    from streamrec.store.models import activate, new_version_name, write_version
    from streamrec.store.trending import add_counts
    from streamrec.store.users import Interaction, append_history

    rng = np.random.default_rng(cfg.seed)
    items = [f"item-{i}" for i in range(cfg.items)]
    users = [f"user-{u}" for u in range(cfg.users)]
    y = (rng.standard_normal((cfg.items, cfg.factors)) * 0.1).astype(np.float32)
    x = (rng.standard_normal((cfg.users, cfg.factors)) * 0.5).astype(np.float32)
    version = new_version_name()
    write_version(store, version, {"trained_at": time.time(), "synthetic": True}, items, y, gram(y), users, x)
    if cfg.compare_content:
        from ops.bench_api_content import publish_content

        publish_content(settings or Settings(), store, version, items, users, cfg.factors, cfg.seed)
    activate(store, version)
    now = now_ms()
    pipe = store.client.pipeline(transaction=False)
    for n, user in enumerate(users):
        seen = rng.integers(0, cfg.items, rng.integers(*HISTORY))
        append_history(pipe, store, user, [Interaction(items[i], 1.0, now - 1000 * j, "click")
                                           for j, i in enumerate(seen.tolist())], cap=200)
        if n % 500 == 499:
            pipe.execute()
    pipe.execute()
    cats = rng.integers(0, CATEGORIES, cfg.items)
    off = set(rng.choice(cfg.items, int(cfg.items * UNAVAILABLE_SHARE), replace=False).tolist())
    put_items(store, ({"item_id": it, "category": f"cat-{c}", "available": i not in off}
                      for i, (it, c) in enumerate(zip(items, cats.tolist(), strict=True))))
    hot = rng.zipf(1.3, 5_000) % cfg.items
    counts: dict[tuple[str, str | None], float] = {}
    for i in hot.tolist():
        key = (items[i], f"cat-{cats[i]}")
        counts[key] = counts.get(key, 0.0) + 1.0
    pipe = store.client.pipeline(transaction=False)
    add_counts(pipe, store, now, counts)
    pipe.execute()
    _publish_covisitation(store, items, cfg, rng, now)
    return users


def _publish_covisitation(store: RedisStore, items: list[str], cfg: BenchConfig, rng: np.random.Generator,
                          now: int) -> None:
    """Every item's co-visitation hash: ``covis_neighbours`` random neighbours, epoch now."""
    from streamrec.store.covisitation import EPOCH_FIELD, covis_key

    n = cfg.covis_neighbours
    if n <= 0:
        return
    if cfg.compare_content:
        from ops.bench_api_content import COVIS_SHARE

        with_covis = int(len(items) * COVIS_SHARE)
    else:
        with_covis = len(items)
    pipe = store.client.pipeline(transaction=False)
    for i, item in enumerate(items[:with_covis]):
        nb = rng.integers(0, len(items), n).tolist()
        scores = rng.exponential(1.0, n).tolist()
        pipe.hset(covis_key(store, item), mapping={EPOCH_FIELD: now, **{items[j]: s for j, s in zip(nb, scores,
                                                                                                  strict=True)}})
        if i % 2_000 == 1_999:
            pipe.execute()
    pipe.execute()


async def _inprocess(settings: Settings, users: list[str], n: int) -> tuple[list[float], list[float]]:
    """The service call without HTTP (same Redis round trip, scoring and JSON answer), and scoring alone."""
    from online_api.cache import ModelCache
    from online_api.metrics import ApiMetrics
    from online_api.refresher import Refresher
    from online_api.service import Recommender
    from streamrec.redis_clients import async_client

    metrics = ApiMetrics()
    cache = ModelCache(settings)
    refresher = Refresher(settings, cache, metrics)
    refresher.tick()
    client = async_client(settings)
    svc = Recommender(settings, cache, metrics, client)
    rng = np.random.default_rng(1)
    full, scoring = [], []
    vec = rng.standard_normal(cache.view.model.n_factors if cache.view.model else 1).astype(np.float32)
    try:
        for i in range(n + 200):
            user = users[int(rng.integers(len(users)))]
            t0 = time.perf_counter()
            (await svc.recommend(user, 10)).to_json()
            t1 = time.perf_counter()
            svc._personal(cache.view, vec, 10, (), None, ())
            t2 = time.perf_counter()
            if i >= 200:  # warm-up
                full.append((t1 - t0) * 1000)
                scoring.append((t2 - t1) * 1000)
    finally:
        await svc.aclose()
        await client.aclose()
        refresher.stop()
    return full, scoring


def _start(settings: Settings, name: str, paths: list[str], stack: ExitStack) -> Lane:
    """An API process serving with ``settings``, ready, stopped when ``stack`` closes."""
    api = stack.enter_context(ApiProcess(settings))
    _say(f"{name}: `streamrec api` (1 uvicorn worker) on {api.url}")
    api.wait_for("/readyz")
    return Lane(name, api, paths)


def _on_cluster(settings: Settings, cfg: BenchConfig, stack: ExitStack) -> Settings:
    """``settings`` on the local Redis Cluster (started when it does not run), the same synthetic data
    published there and removed when ``stack`` closes."""
    from streamrec.localstack import LocalStack

    LocalStack(settings, progress=_say).up(redis_cluster=True)
    url = f"redis+cluster://{settings.bind_host}:{settings.redis_cluster_port}/0"
    on_cluster = settings.model_copy(update={"redis_url": url, "redis_cluster": True})
    store = RedisStore(on_cluster)
    stack.callback(store.close)
    stack.callback(store.delete_prefix)
    _say(f"publishing the same synthetic data on the Redis Cluster at {url}")
    publish_synthetic(store, cfg, on_cluster)
    return on_cluster


def _lanes(settings: Settings, cfg: BenchConfig, paths: list[str], stack: ExitStack) -> dict[str, Lane]:
    """The served path and each compared one (same data, same requests), every one in its own process."""
    lanes = {"served": _start(settings, "served", paths, stack)}
    if cfg.compare_als:
        lanes["als"] = _start(settings.model_copy(update={"api_hybrid": False}),
                              "ALS-only path (STREAMREC_API_HYBRID=false)", paths, stack)
    if cfg.compare_cluster:
        lanes["cluster"] = _start(_on_cluster(settings, cfg, stack), "the same API on the Redis Cluster",
                                  paths, stack)
    if cfg.compare_content:
        from ops.bench_api_content import without_content

        lanes["without_content"] = _start(without_content(settings), "without the content sources", paths, stack)
    return lanes


def _ratios(served: dict[str, float], lanes: dict[str, Lane]) -> dict[str, object]:
    """Each compared lane's figures and its ratios to the served path (cluster: cluster / single Redis)."""
    out: dict[str, object] = {}
    for name, lane in lanes.items():
        if name == "served":
            continue
        f = lane.figures()
        out[name] = {k: f[k] for k in ("rps", "p50_ms", "p99_ms")}
        num, den = (f, served) if name == "cluster" else (served, f)
        prefix = {"als": "", "cluster": "cluster_", "without_content": "content_"}[name]
        out[f"{prefix}p99_ratio"] = round(num["p99_ms"] / max(den["p99_ms"], 1e-9), 3)
        out[f"{prefix}rps_ratio"] = round(num["rps"] / max(den["rps"], 1e-9), 3)
    return out


def run(base: Settings, cfg: BenchConfig, *, json_out: bool = False) -> int:
    """Run the benchmark; prints figures (and the JSON line with ``json_out``). Returns the exit code."""
    import uvloop
    from threadpoolctl import threadpool_limits

    settings = base.model_copy(update={"redis_prefix": f"bench-api-{uuid.uuid4().hex[:8]}"})
    store = RedisStore(settings)
    if not store.ping():
        _say(f"redis at {settings.redis_url} did not answer (is the stack up? streamrec stack up)")
        return 1
    try:
        with ExitStack() as stack:
            _say(f"publishing a synthetic model: {cfg.items} items x {cfg.factors} factors, {cfg.users} users "
                 f"with histories, catalogue and trending (prefix {settings.redis_prefix})")
            users = publish_synthetic(store, cfg, settings)
            rng = np.random.default_rng(cfg.seed)
            paths = [f"/v1/users/{users[i]}/recommendations?k=10" for i in rng.integers(0, len(users), 100_000)]
            lanes = _lanes(settings, cfg, paths, stack)
            _say(f"load: {cfg.connections} keep-alive connections, {cfg.duration_s:g}s per process in "
                 f"{ROUNDS} turns (process after process, so a drift of the shared machine weighs on all alike); "
                 f"the load generator runs in this process, the servers in others, sharing {os.cpu_count()} cores")
            drive(list(lanes.values()), cfg.connections, cfg.duration_s)
            floor_http, floor_note = load(lanes["served"].api, None, cfg.connections, 3.0)
        served = lanes["served"]
        bad = served.non_200()
        figures: dict[str, object] = {**served.figures()}
        del figures["non_200"]
        _say(f"http: {len(served.server_ms())} requests, {figures['rps']} req/s, non-200: {bad or 'none'}")
        _say(f"server-side ms (Server-Timing): p50 {figures['p50_ms']}  p99 {figures['p99_ms']}  "
             f"max {max(served.server_ms(), default=float('nan')):.3f}")
        client = served.client_ms()
        _say(f"client-side ms (incl. queueing at {cfg.connections} connections): p50 "
             f"{LoadResult.pct(client, 50):.3f}  p99 {LoadResult.pct(client, 99):.3f}")
        _say(f"http floor (GET /healthz, same setup): {floor_http.rps:.0f} req/s; {floor_note}")
        _say(f"in-process floor: {cfg.inprocess_requests} sequential service calls without HTTP")
        with threadpool_limits(1):  # as in the server (OPENBLAS_NUM_THREADS=1)
            floor, scoring = uvloop.run(_inprocess(settings, users, cfg.inprocess_requests))
        _say(f"in-process ms: p50 {LoadResult.pct(floor, 50):.3f}  p99 {LoadResult.pct(floor, 99):.3f}; "
             f"of which scoring alone (no Redis): p50 {LoadResult.pct(scoring, 50):.3f}  "
             f"p99 {LoadResult.pct(scoring, 99):.3f}")
        figures |= {"inprocess_p99_ms": round(LoadResult.pct(floor, 99), 3), "items": cfg.items,
                    **_ratios(served.figures(), lanes)}
        extra = {"client_p50_ms": round(LoadResult.pct(client, 50), 3),
                 "client_p99_ms": round(LoadResult.pct(client, 99), 3),
                 "inprocess_p50_ms": round(LoadResult.pct(floor, 50), 3),
                 "scoring_p50_ms": round(LoadResult.pct(scoring, 50), 3), "healthz_rps": round(floor_http.rps),
                 "connections": cfg.connections, "cores": os.cpu_count(), "non_200": bad}
        print(f"figures: {json.dumps({**figures, **extra})}", file=sys.stderr, flush=True)
        if json_out:
            print(json.dumps(figures), flush=True)
        else:
            print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
        return 0 if not bad and served.server_ms() else 1
    finally:
        store.delete_prefix()
        store.close()
