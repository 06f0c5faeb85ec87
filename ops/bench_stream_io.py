"""The pieces of ``streamrec bench stream``: the isolated model, events, producer, worker waits and figures.

Shared with the reliability and integration tests that drive a real worker process (``publish_model``,
``worker_env``, ``wait_applied``, ``cpu_seconds``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from streamrec.events import Event, now_ms
from streamrec.kafka_io import EventProducer, admin_client, end_offsets, read_range
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import applied_offsets

WARMUP_EVENTS = 3_000


@dataclass(frozen=True)
class BenchConfig:
    """What ``bench stream`` runs: the measured events, the offered rate and the synthetic model."""

    events: int = 150_000
    rate: float = 10_000.0
    users: int = 20_000
    items: int = 50_000
    factors: int = 64
    seed: int = 7
    core: bool = True
    keep_files: bool = False
    capacity: bool = True  # first drain a backlog of ``events`` (the rate phase's events, by other users)
    rate_from_capacity: bool = False  # offer ``capacity_share`` × the measured capacity instead of ``rate``
    capacity_share: float = 0.7


def _say(msg: str) -> None:
    print(f"[bench stream] {msg}", file=sys.stderr, flush=True)


def isolated(settings: Settings, tag: str) -> Settings:
    return settings.model_copy(update={
        "topic_clicks": f"bench-{tag}.clicks", "topic_purchases": f"bench-{tag}.purchases",
        "topic_dead_letter": f"bench-{tag}.dead-letter", "consumer_group": f"bench-{tag}",
        "redis_prefix": f"bench-{tag}", "worker_metrics_port": 0})


def worker_env(s: Settings) -> dict[str, str]:
    """The environment that makes a ``streamrec worker`` process use settings ``s`` (every one of them)."""
    from online_api.server import settings_env

    return {**os.environ, **settings_env(s)}


def publish_model(s: Settings, items: int, factors: int, seed: int) -> None:
    from models.foldin import gram
    from streamrec.store.models import activate, write_version

    rng = np.random.default_rng(seed)
    y = (rng.standard_normal((items, factors)) * 0.1).astype(np.float32)
    store = RedisStore(s)
    write_version(store, "vbench", {"source": "bench stream (random factors)"}, [f"i{i}" for i in range(items)],
                  y, gram(y), [], np.zeros((0, factors), dtype=np.float32))
    activate(store, "vbench")
    store.close()


def make_events(cfg: BenchConfig, n: int) -> list[Event]:
    """``n`` simulated events (timestamps are stamped when sent, see :func:`wire_events`)."""
    from streamrec.simulate import SimConfig, Storefront

    stream = Storefront(SimConfig(seed=cfg.seed, users=cfg.users, items=cfg.items)).events(lambda: 1_700_000_000_000)
    return [next(stream) for _ in range(n)]


def renamed(events: Sequence[Event], tag: str) -> list[Event]:
    """The same events by users of other names (``<tag>-<user>``) with new event ids: replayed after the
    originals they cost the worker what the originals did (same history lengths, same items), so two phases
    of a run see the same work per event."""
    return [msgspec.structs.replace(e, user_id=f"{tag}-{e.user_id}", event_id=uuid.uuid4()) for e in events]


def wire_events(events: Sequence[Event]) -> list[tuple[str, bytes, bytes, bytes]]:
    """(event type, key, JSON before the ts digits, JSON after) per event, so sending only stamps ts."""
    out = []
    for e in events:
        head, _, tail = e.to_json_bytes().partition(b'"ts":1700000000000')
        out.append((e.type.value, e.key, head + b'"ts":', tail))
    return out


def produce(s: Settings, events: list[tuple[str, bytes, bytes, bytes]], rate: float) -> tuple[int, int]:
    """Send ``events`` at ``rate``/s, each stamped when sent; returns (first, last) send time in ms."""
    producer = EventProducer(s)
    topics = {etype: s.topic_for(etype) for etype in {e[0] for e in events}}  # the event-type registry's topics
    start = time.monotonic()
    first = now_ms()
    for i, (etype, key, head, tail) in enumerate(events):
        if rate > 0 and i % 50 == 0:
            ahead = i / rate - (time.monotonic() - start)
            if ahead > 0.001:
                time.sleep(ahead)
        producer.send_raw(topics[etype], key, head + str(now_ms()).encode() + tail)
    last = now_ms()
    if producer.flush(60):
        raise RuntimeError("events not delivered to Kafka")
    return first, last


def wait_applied(s: Settings, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Until the worker's applied offsets reach the topics' end offsets."""
    store = RedisStore(s)
    target = {f"{t}:{p}": hi - 1 for (t, p), hi in end_offsets(s, s.event_topics).items() if hi > 0}
    deadline = time.monotonic() + timeout_s
    while True:
        applied = applied_offsets(store, s.consumer_group)
        if all(applied.get(f, -1) >= off for f, off in target.items()):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            left = sum(off - applied.get(f, -1) for f, off in target.items())
            raise TimeoutError(f"the worker did not apply {left} events within {timeout_s:.0f}s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def core_run(s: Settings, start: dict[tuple[str, int], int], cfg: BenchConfig) -> dict[str, float]:
    """The processing core on the measured records, in this process, against fresh prefixes: events/s without
    and with co-visitation (the hybrid's signal's cost, same records, side by side)."""
    from threadpoolctl import threadpool_limits

    from stream_processors.processor import tune_gc

    threadpool_limits(1)  # as in the worker
    records = list(read_range(s, start, end_offsets(s, s.event_topics)))
    records.sort(key=lambda r: r.timestamp_ms)
    tune_gc()
    out = {}
    for name, covis in (("core_events_per_s", False), ("core_events_per_s_covisitation", True)):
        core = s.model_copy(update={"redis_prefix": f"{s.redis_prefix}-{name}", "worker_covisitation": covis})
        out[name] = _core_events_per_s(core, records, cfg)
    return out


def _core_events_per_s(core: Settings, records: list[Any], cfg: BenchConfig) -> float:
    from stream_processors.processor import BatchProcessor

    publish_model(core, cfg.items, cfg.factors, cfg.seed)
    proc = BatchProcessor(core)
    proc.refresh_model()
    size = core.worker_batch_size
    t = time.perf_counter()
    applied = sum(proc.process(records[i : i + size]).applied for i in range(0, len(records), size))
    return applied / (time.perf_counter() - t)


def read_stats(stats_file: Path, since_ms: int, expected: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The worker's per-batch lines written since ``since_ms``, once they account for ``expected`` events
    (the worker writes a batch's line just after committing it, so the last one can trail the offsets)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = stats_file.read_text().splitlines() if stats_file.exists() else []
        batches = [json.loads(line) for line in lines if line.strip()]
        timed = [b for b in batches if b["write_ms"] >= since_ms]
        if sum(b["applied"] for b in timed) >= expected or time.monotonic() > deadline:
            return timed
        time.sleep(0.1)


def summarise(timed: list[dict[str, Any]], first_ms: int) -> dict[str, Any]:
    """Figures of the measured phase from the worker's per-batch lines.

    ``events_per_s`` is the steady application rate: events applied after the first measured batch over
    the time between that batch's write and the last one's, so neither start-up nor the last event's
    latency (already in the freshness figures) is counted as throughput. When the worker keeps up it
    equals the producer's rate; when it falls behind it is the worker's capacity.
    """
    applied = sum(b["applied"] for b in timed)
    fresh = np.concatenate([np.asarray(b["fresh"], dtype=np.int64) for b in timed]) if timed else np.zeros(1)
    foldin = sum(b["foldin_s"] for b in timed)
    foldin_cpu = sum(b.get("foldin_cpu_s", b["foldin_s"]) for b in timed)
    span_ms = timed[-1]["write_ms"] - timed[0]["write_ms"] if len(timed) > 1 else 0
    rate = (applied - timed[0]["applied"]) / (span_ms / 1000) if span_ms > 0 else float("nan")
    last = max(b["write_ms"] for b in timed) if timed else first_ms + 1
    p50, p99 = np.percentile(fresh, [50, 99]).tolist()
    return {"applied": applied, "events_per_s": rate,
            "end_to_end_events_per_s": applied / max((last - first_ms) / 1000, 1e-9),
            "freshness_p50_ms": p50, "freshness_p99_ms": p99, "freshness_max_ms": float(fresh.max()),
            "solver_events_per_s": applied / foldin if foldin else float("nan"), "batches": len(timed),
            "solver_cpu_s": foldin_cpu,
            "mean_batch": applied / max(len(timed), 1), "batch_s_total": sum(b["batch_s"] for b in timed)}


def cleanup(s: Settings, prefixes: list[str]) -> None:
    store = RedisStore(s)
    for prefix in prefixes:
        store.delete_prefix(prefix)
    store.close()
    admin = admin_client(s)
    futures = admin.delete_topics([*s.event_topics, s.topic_dead_letter], operation_timeout=30)
    for fut in futures.values():
        try:
            fut.result(30)
        except Exception as exc:  # best effort: a leftover bench topic is harmless
            _say(f"could not delete a topic: {exc}")


