"""Benchmark: a real ``streamrec worker`` process at a given event rate -- throughput and freshness.

Everything is isolated (its own topics, consumer group and Redis prefix, removed afterwards). It
publishes a synthetic model (random item factors, by default 64 factors × 50,000 items named like the
simulator's items), pre-generates simulated events, starts one worker process, warms it up, then
produces ``events`` events at ``rate`` per second, each stamped with the wall clock as it is sent, and
waits until the worker has applied them all. From the worker's per-batch stats file:

* ``events_per_s``: events applied / (last batch written − first event sent);
* ``freshness_p50_ms`` / ``freshness_p99_ms``: per event, the batch's Redis write time minus the event's ts;
* ``solver_events_per_s``: the same events / the time the worker spent in the batched fold-in
  (the ceiling of the solver alone, measured in the same run); ``ratio`` = events_per_s / that;
* ``core_events_per_s``: the processing core (decode, Redis round trips, fold-in, MULTI/EXEC) run
  in this process on the same records read back from Kafka, without Faust (skip with ``--no-core``).

Run: ``streamrec bench stream [--json] [--events N] [--rate R]``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.events import now_ms
from streamrec.kafka_io import EventProducer, admin_client, end_offsets, ensure_topics, read_range
from streamrec.settings import Settings
from streamrec.store import RedisStore

WARMUP_EVENTS = 3_000


@dataclass(frozen=True)
class BenchConfig:
    events: int = 150_000
    rate: float = 10_000.0
    users: int = 20_000
    items: int = 50_000
    factors: int = 64
    seed: int = 7
    core: bool = True
    keep_files: bool = False


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


def make_events(cfg: BenchConfig, n: int) -> list[tuple[str, bytes, bytes, bytes]]:
    """(event type, key, JSON before the ts digits, JSON after) per event, so sending only stamps ts."""
    from streamrec.simulate import SimConfig, Storefront

    out = []
    stream = Storefront(SimConfig(seed=cfg.seed, users=cfg.users, items=cfg.items)).events(lambda: 1_700_000_000_000)
    for _ in range(n):
        e = next(stream)
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
        raw = store.client.hgetall(store.keys.offsets(s.consumer_group))
        applied = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
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
    span_ms = timed[-1]["write_ms"] - timed[0]["write_ms"] if len(timed) > 1 else 0
    rate = (applied - timed[0]["applied"]) / (span_ms / 1000) if span_ms > 0 else float("nan")
    last = max(b["write_ms"] for b in timed) if timed else first_ms + 1
    p50, p99 = np.percentile(fresh, [50, 99]).tolist()
    return {"applied": applied, "events_per_s": rate,
            "end_to_end_events_per_s": applied / max((last - first_ms) / 1000, 1e-9),
            "freshness_p50_ms": p50, "freshness_p99_ms": p99, "freshness_max_ms": float(fresh.max()),
            "solver_events_per_s": applied / foldin if foldin else float("nan"), "batches": len(timed),
            "mean_batch": applied / max(len(timed), 1), "batch_s_total": sum(b["batch_s"] for b in timed)}


def cleanup(s: Settings, prefixes: list[str]) -> None:
    store = RedisStore(s)
    for prefix in prefixes:
        keys = list(store.client.scan_iter(f"{prefix}:*", count=5_000))
        for i in range(0, len(keys), 1_000):
            store.client.unlink(*keys[i : i + 1_000])
    store.close()
    admin = admin_client(s)
    futures = admin.delete_topics([*s.event_topics, s.topic_dead_letter], operation_timeout=30)
    for fut in futures.values():
        try:
            fut.result(30)
        except Exception as exc:  # best effort: a leftover bench topic is harmless
            _say(f"could not delete a topic: {exc}")


def run(settings: Settings, cfg: BenchConfig, json_only: bool = False) -> int:
    s = isolated(settings, uuid.uuid4().hex[:8])
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-bench-stream-"))
    stats_file, log_file = tmp / "batches.jsonl", tmp / "worker.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        ensure_topics(s)
        _say(f"publishing a random model: {cfg.items} items × {cfg.factors} factors (prefix {s.redis_prefix})")
        publish_model(s, cfg.items, cfg.factors, cfg.seed)
        _say(f"generating {WARMUP_EVENTS} + {cfg.events} simulated events ({cfg.users} users)")
        events = make_events(cfg, WARMUP_EVENTS + cfg.events)
        with log_file.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "worker", "--stats-file", str(stats_file),
                                     "--log-level", "info"], env=worker_env(s), stdout=log, stderr=subprocess.STDOUT)
        _say(f"worker pid {proc.pid} started; warming up with {WARMUP_EVENTS} events")
        produce(s, events[:WARMUP_EVENTS], 2_000)
        wait_applied(s, 180, proc)
        start_offsets = end_offsets(s, s.event_topics)
        cpu0 = cpu_seconds(proc.pid)
        since = now_ms()
        _say(f"producing {cfg.events} events at {cfg.rate:g}/s")
        first, last = produce(s, events[WARMUP_EVENTS:], cfg.rate)
        produced_per_s = cfg.events / max((last - first) / 1000, 1e-9)
        _say(f"produced at {produced_per_s:.0f}/s; waiting for the worker")
        wait_applied(s, max(120.0, 5 * cfg.events / max(cfg.rate, 1.0)), proc)
        timed = read_stats(stats_file, since, cfg.events)
        cpu = cpu_seconds(proc.pid) - cpu0
        figures = summarise(timed, first)
        counted = sum(int(v) for v in RedisStore(s).client.hvals(RedisStore(s).keys.user_events))
        if counted != WARMUP_EVENTS + cfg.events:
            raise RuntimeError(f"user_events counts add up to {counted}, expected {WARMUP_EVENTS + cfg.events}")
        figures["worker_cpu_s_per_1k_events"] = 1000 * cpu / max(figures["applied"], 1)
        if cfg.core:
            _say("running the processing core on the same events without Kafka")
            figures.update(core_run(s, start_offsets, cfg))
    except BaseException:
        if log_file.exists():
            _say("worker log tail:\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cleanup(s, [s.redis_prefix, s.redis_prefix + "-core_events_per_s",
                    s.redis_prefix + "-core_events_per_s_covisitation"])
        if cfg.keep_files:
            _say(f"worker log and per-batch stats kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {"events": figures["applied"], "events_per_s": round(figures["events_per_s"], 1),
                           "freshness_p50_ms": round(figures["freshness_p50_ms"], 1),
                           "freshness_p99_ms": round(figures["freshness_p99_ms"], 1),
                           "solver_events_per_s": round(figures["solver_events_per_s"], 1),
                           "rate": cfg.rate, "produced_per_s": round(produced_per_s, 1),
                           "end_to_end_events_per_s": round(figures["end_to_end_events_per_s"], 1),
                           "worker_busy": round(figures["batch_s_total"] / (cfg.events / figures["events_per_s"]), 3),
                           "ratio_to_solver": round(figures["events_per_s"] / figures["solver_events_per_s"], 4),
                           "freshness_max_ms": figures["freshness_max_ms"], "batches": figures["batches"],
                           "mean_batch": round(figures["mean_batch"], 1),
                           "worker_cpu_s_per_1k_events": round(figures["worker_cpu_s_per_1k_events"], 4),
                           "factors": cfg.factors, "items": cfg.items, "cores": os.cpu_count()}
    if "core_events_per_s" in figures:
        out["core_events_per_s"] = round(figures["core_events_per_s"], 1)
        out["core_events_per_s_covisitation"] = round(figures["core_events_per_s_covisitation"], 1)
        on = figures["core_events_per_s_covisitation"]
        out["covisitation_ratio"] = round(on / figures["core_events_per_s"], 3)
    out["worker_covisitation"] = s.worker_covisitation
    if not json_only:
        for key, value in out.items():
            print(f"{key:>28}: {value}")
    print(json.dumps(out))
    return 0
