"""`streamrec bench publish`: the refit's vector publish, redis-py (hiredis) against hand-built RESP.

The refit publishes every user's vector as one field of one hash (``<p>:model:<v>:users``). Two ways of
writing the same bytes are timed on the same vectors against the configured Redis, alternating, under a
private key prefix that is removed afterwards:

* ``redis-py``: :meth:`streamrec.store.RedisStore.write_vectors`, pipelined ``HSET key mapping`` chunks
  of 5,000 fields through redis-py, which packs commands with hiredis when it is installed;
* ``resp``: :meth:`batch.fastredis.BulkStore.write_vectors`, each chunk packed as one RESP buffer straight
  from the float32 block and streamed before the replies are read.

The issue 13 rule: the hand-written path stays only while it is at least 1.5 × faster (wall time).
Both hashes are compared (a sample of fields) so the two paths are known to do the same work. Each
write starts once Redis has freed the previous hash (UNLINK frees in the background), rounds alternate
the order, and besides wall time the client's and the Redis server's CPU seconds are reported: on a
loaded machine wall times swing, CPU seconds much less. The last line (with ``--json``) is ``{"users",
"factors", "redis_py_s", "resp_s", "ratio", ...}`` (medians; ``paired_ratio`` is the median of each
round's ratio, ``best_ratio`` that of the fastest runs).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from batch.fastredis import BulkStore
from streamrec.settings import Settings
from streamrec.store import F32, RedisStore

KEEP_RATIO = 1.5  # issue 13: below this the hand-written writer is not worth its code
Writer = Callable[[str, Sequence[str], np.ndarray], None]


class Sample(NamedTuple):
    """One timed publish, in seconds."""

    wall: float
    client_cpu: float
    server_cpu: float


@dataclass(frozen=True)
class BenchConfig:
    users: int = 235_000  # the Globo refit's user count
    factors: int = 64
    repeat: int = 5
    seed: int = 0


def _say(msg: str) -> None:
    print(f"[bench publish] {msg}", file=sys.stderr, flush=True)


def _redis_cpu(client: Any) -> float:
    """Seconds of CPU the Redis server has used (all its clients: on a shared Redis, others' too)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _clear(client: Any, key: str) -> None:
    """Remove ``key`` and wait until Redis freed it: UNLINK frees in a background thread, which would
    otherwise compete with the next timed write (DEL would block the shared Redis instead)."""
    client.unlink(key)
    deadline = time.monotonic() + 10
    while int(client.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.02)


def _timed(write: Writer, client: Any, key: str, ids: Sequence[str], block: np.ndarray) -> Sample:
    """Wall, client CPU and Redis CPU seconds of one publish."""
    _clear(client, key)
    server, wall, cpu = _redis_cpu(client), time.perf_counter(), time.process_time()
    write(key, ids, block)
    return Sample(time.perf_counter() - wall, time.process_time() - cpu, _redis_cpu(client) - server)


def _same_hashes(store: RedisStore, a: str, b: str, ids: Sequence[str], block: np.ndarray) -> None:
    """Both hashes hold every id, and a sample of fields is the exact float32 bytes in both."""
    client = store.client
    if not client.hlen(a) == client.hlen(b) == len(ids):
        raise RuntimeError(f"publish wrote {client.hlen(a)} and {client.hlen(b)} fields, not {len(ids)}")
    sample = np.random.default_rng(1).choice(len(ids), size=min(2_000, len(ids)), replace=False)
    names = [ids[i] for i in sample]
    want = [block[i].astype(F32).tobytes() for i in sample]
    if client.hmget(a, names) != want or client.hmget(b, names) != want:
        raise RuntimeError("the two publish paths stored different bytes")


def _summary(cfg: BenchConfig, times: dict[str, list[Sample]]) -> dict[str, Any]:
    def med(name: str, field: str) -> float:
        return statistics.median(getattr(x, field) for x in times[name])

    # Each round's two runs are seconds apart: their ratio is the least disturbed by the machine's load.
    paired = statistics.median(a.wall / b.wall for a, b in zip(times["redis_py"], times["resp"], strict=True))
    best = {n: min(x.wall for x in v) for n, v in times.items()}
    return {"users": cfg.users, "factors": cfg.factors, "redis_py_s": round(med("redis_py", "wall"), 3),
            "resp_s": round(med("resp", "wall"), 3), "ratio": round(med("redis_py", "wall") / med("resp", "wall"), 2),
            "best_ratio": round(best["redis_py"] / best["resp"], 2), "paired_ratio": round(paired, 2),
            "repeat": cfg.repeat, "redis_py_client_cpu_s": round(med("redis_py", "client_cpu"), 3),
            "resp_client_cpu_s": round(med("resp", "client_cpu"), 3),
            "redis_py_server_cpu_s": round(med("redis_py", "server_cpu"), 3),
            "resp_server_cpu_s": round(med("resp", "server_cpu"), 3)}


def run(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    """Time both paths ``cfg.repeat`` times each, alternating; medians, best runs and the ratios."""
    prefix = f"{settings.redis_prefix}:bench-publish-{uuid.uuid4().hex[:8]}"
    store = RedisStore(settings, prefix=prefix)
    bulk = BulkStore.like(store, settings)
    ids = [f"user-{n}" for n in range(cfg.users)]
    block = np.random.default_rng(cfg.seed).standard_normal((cfg.users, cfg.factors)).astype(F32)
    paths: dict[str, Writer] = {"redis_py": store.write_vectors, "resp": bulk.write_vectors}
    times: dict[str, list[Sample]] = {name: [] for name in paths}
    keys = {name: store.keys.model("bench", name) for name in paths}
    try:
        for attempt in range(cfg.repeat + 1):  # the first round warms connections and Redis' allocator
            order = list(paths.items()) if attempt % 2 else list(paths.items())[::-1]  # ABBA: no order bias
            for name, write in order:
                took = _timed(write, store.client, keys[name], ids, block)
                if attempt:
                    times[name].append(took)
            if attempt == 0:
                _same_hashes(store, keys["redis_py"], keys["resp"], ids, block)
            else:
                _say(f"round {attempt}: " + ", ".join(f"{n} {times[n][-1].wall:.3f}s" for n in paths))
    finally:
        store.client.unlink(*keys.values())
        bulk.close()
        store.close()
    return _summary(cfg, times)


def main(settings: Settings, cfg: BenchConfig, *, json_out: bool = False) -> int:
    """Run, print the figures and the verdict of the 1.5 × rule; 1 when Redis does not answer."""
    probe = RedisStore(settings)
    reachable = probe.ping()
    probe.close()
    if not reachable:
        _say(f"redis at {settings.redis_url} did not answer (is the stack up? streamrec stack up)")
        return 1
    _say(f"{cfg.users} users x {cfg.factors} float32 factors, {cfg.repeat} timed rounds per path, alternating")
    result = run(settings, cfg)
    verdict = "keep" if result["ratio"] >= KEEP_RATIO else "remove"
    _say(f"redis-py (hiredis) {result['redis_py_s']:.3f}s, hand-built RESP {result['resp_s']:.3f}s (medians): "
         f"{result['ratio']:.2f}x (best runs {result['best_ratio']:.2f}x, median of rounds "
         f"{result['paired_ratio']:.2f}x); client CPU {result['redis_py_client_cpu_s']:.3f}s vs "
         f"{result['resp_client_cpu_s']:.3f}s, Redis CPU {result['redis_py_server_cpu_s']:.3f}s vs "
         f"{result['resp_server_cpu_s']:.3f}s; rule {KEEP_RATIO}x: "
         f"{verdict} the hand-built path")
    print(json.dumps(result) if json_out else json.dumps(result, indent=2))
    return 0
