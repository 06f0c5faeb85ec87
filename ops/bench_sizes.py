"""`streamrec bench api --sizes 10000,50000,1000000`: recommendations through HTTP with the item index, by size.

For each size: publish item factors resampled from a real fit (:mod:`ops.bench_factors`) with the fit's
own user vectors, histories, a catalogue with 1% unavailable items, trending counts and co-visitation of
each user's newest items, under a private Redis prefix, and start ``streamrec api`` (one uvicorn worker)
with the index on (``STREAMREC_API_ANN_MIN_ITEMS=1``) once it serves through the index; at 50,000 items
also one with the exact scan (``STREAMREC_API_ANN=false``), for ``exact``. Then every process is driven in
turn, for ``ROUNDS`` rounds (so a load that drifts on a shared machine weighs on all alike), and its RSS is
read. Last, a fixed set of users is asked through each indexed process and through an exact-scan process
on the same data: ``recall_at_10`` is the share of the exact answers' items the indexed answers hold.

At the largest size a second indexed process is started on the same data, as a second uvicorn worker of
the host would be: it maps the index files the first wrote (``two_processes``: both processes' Pss and
private MB, the shared files' MB, the second's seconds to serve through the index).

Last line: ``{"sizes": {"<n>": {"rps", "p50_ms", "p99_ms", "recall_at_10", "index_build_s", "rss_mb",
"exact_rss_mb", "non_200", "two_processes" (largest size)}},
"exact": {"50000": {"rps", "p99_ms"}}, "factors": <source>, "index": <factory, search>}``.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from online_api.server import ApiProcess
from ops.bench_factors import FittedFactors, fitted_factors, resample
from ops.bench_lanes import Lane, drive
from streamrec.settings import Settings
from streamrec.store import RedisStore

EXACT_AT = 50_000
RECALL_USERS = 300


@dataclass(frozen=True)
class SizesConfig:
    sizes: tuple[int, ...] = (10_000, 50_000, 1_000_000)
    users: int = 5_000
    factors: int = 64
    duration_s: float = 10.0
    connections: int = 2
    seed: int = 7


def _say(msg: str) -> None:
    print(f"[bench api] {msg}", file=sys.stderr, flush=True)


def publish_sized(store: RedisStore, fit: FittedFactors, n: int, cfg: SizesConfig) -> list[str]:
    """Write one model version of ``n`` items and its users, catalogue, trending and co-visitation."""
    from models.foldin import gram
    from streamrec.events import now_ms
    from streamrec.store.covisitation import EPOCH_FIELD, covis_key
    from streamrec.store.models import activate, new_version_name, write_version
    from streamrec.store.trending import add_counts
    from streamrec.store.users import Interaction, append_history

    rng = np.random.default_rng(cfg.seed)
    y = resample(fit.items, n, seed=cfg.seed)
    x = fit.users[rng.choice(len(fit.users), cfg.users, replace=False)]
    items, users = [f"item-{i}" for i in range(n)], [f"user-{u}" for u in range(cfg.users)]
    version = new_version_name()
    write_version(store, version, {"synthetic": True, "factors_from": fit.source}, items, y, gram(y), users, x)
    activate(store, version)
    now, k = now_ms(), store.keys
    pipe = store.client.pipeline(transaction=False)
    for u, user in enumerate(users):
        seen = rng.integers(0, n, rng.integers(10, 60)).tolist()
        append_history(pipe, store, user, [Interaction(items[i], 1.0, now - 1000 * j, "click")
                                           for j, i in enumerate(seen)], cap=200)
        for i in seen[:3]:  # what the hybrid reads: the newest items' co-visitation neighbours
            nb = rng.integers(0, n, 20).tolist()
            pipe.hset(covis_key(store, items[i]), mapping={EPOCH_FIELD: now, **{items[j]: float(s) for j, s in zip(
                nb, rng.exponential(1.0, 20).tolist(), strict=True)}})
        if u % 500 == 499:
            pipe.execute()
    cats = rng.integers(0, 20, n)
    for start in range(0, n, 20_000):  # the category hash the API reads (not the per-item attribute hashes)
        pipe.hset(k.item_category, mapping={items[i]: f"cat-{cats[i]}" for i in range(start, min(n, start + 20_000))})
        pipe.execute()
    off = rng.choice(n, n // 100, replace=False).tolist()
    for start in range(0, len(off), 20_000):
        pipe.sadd(k.unavailable, *[items[i] for i in off[start : start + 20_000]])
    counts: dict[tuple[str, str | None], float] = {}
    for i in (rng.zipf(1.3, 5_000) % n).tolist():
        counts[(items[i], f"cat-{cats[i]}")] = counts.get((items[i], f"cat-{cats[i]}"), 0.0) + 1.0
    add_counts(pipe, store, now, counts)
    pipe.execute()
    return users


def _metric(url: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics", timeout=5).text, re.M)
    return float(m.group(1)) if m else None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _smaps_mb(pid: int) -> dict[str, float]:
    """Pss and private bytes (MB) of a process: what it costs the host when pages are shared."""
    kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in
                                            Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])}
    return {"pss_mb": round(kb["Pss"] / 1024, 1),
            "private_mb": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1)}


def _host(size: _Size, n: int) -> dict[str, object]:
    """A second API process on the same host and data: it maps the indexes and factors the first wrote
    (``STREAMREC_API_INDEX_DIR``) instead of building its own. Both processes' Pss and private bytes, the
    shared files' size, and the second's seconds from start to serving through the index."""
    import time

    started = time.monotonic()
    with ApiProcess(size.settings.model_copy(update={"api_ann": True, "api_ann_min_items": 1})) as second:
        second.wait_for("/readyz", 300)
        _wait_index(second, n)
        ready_s = time.monotonic() - started
        _answers(second.url, size.users[:200])  # touch the index pages a served process touches
        _answers(size.lane.api.url, size.users[:200])
        procs = [_smaps_mb(size.lane.api.pid), _smaps_mb(second.pid)]
    where = Path(size.settings.api_index_dir)
    # allocated bytes (st_blocks): the factors file's room for folded-in rows is a hole
    shared = sum(p.stat().st_blocks * 512 for p in where.iterdir()) if where.is_dir() else 0
    return {"processes": procs, "shared_files_mb": round(shared / 2**20, 1), "second_serving_s": round(ready_s, 2)}


def _answers(url: str, users: list[str]) -> list[list[str]]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [[i["item_id"] for i in client.get(f"/v1/users/{u}/recommendations?k=10").json()["items"]]
                for u in users]


def _wait_index(api: ApiProcess, n: int, timeout_s: float = 600.0) -> float:
    """Wait until the API serves through an index of ``n`` items; returns its build seconds."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _metric(api.url, "streamrec_api_index_items") == n:
            return float(_metric(api.url, "streamrec_api_index_build_seconds") or 0.0)
        time.sleep(0.5)
    raise RuntimeError(f"the API did not serve an index of {n} items within {timeout_s:.0f}s")


def _start(settings: Settings, name: str, users: list[str], cfg: SizesConfig, *, indexed: bool, n: int,
           stack: ExitStack) -> tuple[Lane, float]:
    update: dict[str, object] = {"api_ann": True, "api_ann_min_items": 1} if indexed else {"api_ann": False}
    api = stack.enter_context(ApiProcess(settings.model_copy(update=update)))
    api.wait_for("/readyz", 300)
    build_s = _wait_index(api, n) if indexed else 0.0
    rng = np.random.default_rng(cfg.seed)
    paths = [f"/v1/users/{users[i]}/recommendations?k=10" for i in rng.integers(0, len(users), 100_000)]
    _say(f"{name}: serving" + (f" (index built in {build_s:.1f}s)" if indexed else ""))
    return Lane(name, api, paths), build_s


@dataclass
class _Size:
    settings: Settings
    users: list[str]
    lane: Lane
    build_s: float
    exact: Lane | None = None


def _recall(settings: Settings, users: list[str], got: list[list[str]]) -> tuple[float, float]:
    """recall_at_10 of ``got`` against an exact-scan API on the same data, and that API's RSS."""
    with ApiProcess(settings.model_copy(update={"api_ann": False})) as plain:
        plain.wait_for("/readyz", 300)
        want = _answers(plain.url, users)
        rss = _rss_mb(plain.pid)
    hits = sum(len(set(g) & set(w)) for g, w in zip(got, want, strict=True))
    return hits / max(1, sum(len(w) for w in want)), rss


def _measure(base: Settings, fit: FittedFactors, cfg: SizesConfig, stack: ExitStack,
             prefixes: list[str]) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, float]]]:
    lanes: list[Lane] = []
    per_size: dict[int, _Size] = {}
    for n in cfg.sizes:
        settings = base.model_copy(update={"redis_prefix": f"bench-sizes-{uuid.uuid4().hex[:8]}"})
        prefixes.append(settings.redis_prefix)
        _say(f"{n:,} items: publishing (factors: {fit.source})")
        users = publish_sized(RedisStore(settings), fit, n, cfg)
        lane, build_s = _start(settings, f"{n:,} items, index", users, cfg, indexed=True, n=n, stack=stack)
        size = per_size[n] = _Size(settings, users, lane, build_s)
        lanes.append(lane)
        if n == EXACT_AT:
            size.exact, _ = _start(settings, f"{n:,} items, exact scan", users, cfg, indexed=False, n=n, stack=stack)
            lanes.append(size.exact)
    drive(lanes, cfg.connections, cfg.duration_s)  # in turns: a drift of the shared box weighs on all alike
    figures: dict[str, dict[str, object]] = {}
    exact: dict[str, dict[str, float]] = {}
    for n, size in per_size.items():
        pick = np.random.default_rng(cfg.seed).choice(len(size.users), min(RECALL_USERS, len(size.users)),
                                                      replace=False)
        asked = [size.users[i] for i in pick]
        got = _answers(size.lane.api.url, asked)
        rss = _rss_mb(size.lane.api.pid)
        host = _host(size, n) if n == max(cfg.sizes) and size.settings.api_index_dir else None
        size.lane.api.stop()  # before this size's exact API starts: one big process at a time
        recall, rss_exact = _recall(size.settings, asked, got)
        figures[str(n)] = {**size.lane.figures(), "recall_at_10": round(recall, 4),
                           "index_build_s": round(size.build_s, 2), "rss_mb": rss, "exact_rss_mb": rss_exact}
        if host is not None:
            figures[str(n)]["two_processes"] = host
        if size.exact is not None:
            ex = size.exact.figures()
            exact[str(n)] = {k: ex[k] for k in ("rps", "p99_ms", "p50_ms")}
        _say(f"{n:,} items: {json.dumps(figures[str(n)])}")
    return figures, exact


def run_sizes(base: Settings, cfg: SizesConfig, *, json_out: bool = False) -> int:
    """Run every size in one invocation; prints figures (the JSON line with ``json_out``). Exit code 1 on errors."""
    if not RedisStore(base).ping():
        _say(f"redis at {base.redis_url} did not answer (is the stack up? streamrec stack up)")
        return 1
    fit = fitted_factors(base, cfg.factors)
    prefixes: list[str] = []
    try:
        with ExitStack() as stack:
            figures, exact = _measure(base, fit, cfg, stack, prefixes)
    finally:
        store = RedisStore(base)
        for prefix in prefixes:
            store.delete_prefix(prefix)
        store.close()
    out = {"sizes": figures, "exact": exact, "factors": fit.source,
           "index": f"{base.api_ann_index} {base.api_ann_search} min_fetch={base.api_ann_min_fetch}",
           "similar_index": f"{base.api_ann_similar_index} {base.api_ann_similar_search}"}
    print(json.dumps(out) if json_out else " ".join(f"{n}: {v}" for n, v in figures.items()), flush=True)
    return 0 if all(v["non_200"] == 0 for v in figures.values()) else 1
