"""Benchmark: a real ``streamrec worker`` process -- its backlog capacity, CPU per event and freshness.

Everything is isolated (its own topics, consumer group and Redis prefix, removed afterwards). It
publishes a synthetic model (random item factors, by default 64 factors × 50,000 items named like the
simulator's items), pre-generates simulated events, starts one worker process, warms it up, then runs
two phases against the same process:

1. **capacity**: the measured events, by renamed users and with new event ids (so they cost what the
   measured ones will: same history lengths, same items): a third produced at once (the uncontended drain
   rate), the rest at 1.25 × that rate, so that a backlog builds while the producer runs beside the worker
   as in the rate phase; the worker's steady rate over the second part is its capacity
   (``capacity_events_per_s``; see :func:`_capacity`);
2. **rate**: ``events`` produced at ``rate`` per second -- or, with ``rate_from_capacity`` (the default of
   ``--json``), at 0.7 × the capacity just measured, so the freshness figures mean the same on a slow or a
   fast machine -- each stamped with the wall clock as it is sent.

From the worker's per-batch stats file and its CPU time (``/proc``), per phase:

* ``events_per_s``: the steady application rate (see :func:`.bench_stream_io.summarise`);
* ``freshness_p50_ms`` / ``freshness_p99_ms``: per event, the batch's Redis write time minus the event's ts;
* ``worker_cpu_us_per_event``: the worker process's CPU time (all threads) per applied event;
* ``solver_cpu_us_per_event``: the CPU time of the batched fold-in alone per event (the solver's cost,
  same events, same process) and ``worker_to_solver_cpu``, the ratio of the two;
* ``core_events_per_s``: the processing core (decode, Redis round trips, fold-in, MULTI/EXEC) run
  in this process on the rate phase's records read back from Kafka, without Faust (skip with ``--no-core``).

Run: ``streamrec bench stream [--json] [--events N] [--rate R | --rate-from-capacity]``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from ops.bench_stream_io import (
    WARMUP_EVENTS,
    BenchConfig,
    _say,
    cleanup,
    core_run,
    cpu_seconds,
    isolated,
    make_events,
    produce,
    publish_model,
    read_stats,
    renamed,
    summarise,
    wait_applied,
    wire_events,
    worker_env,
)
from streamrec.events import now_ms
from streamrec.kafka_io import end_offsets, ensure_topics
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import event_counts

__all__ = ["BenchConfig", "cpu_seconds", "publish_model", "run", "wait_applied", "worker_env"]
Events = list[tuple[str, bytes, bytes, bytes]]


def run(settings: Settings, cfg: BenchConfig, json_only: bool = False, compare_cluster: bool = False) -> int:
    """Run the benchmark; prints the figures (``json_only``: progress on stderr, one JSON line). With
    ``compare_cluster`` it runs four times, on the single Redis of ``settings`` and on the local Redis Cluster
    in turns, and reports the cluster's figures with the single Redis's beside them."""
    out = _compare_cluster(settings, cfg) if compare_cluster else measure(settings, cfg)
    if not json_only:
        for key, value in out.items():
            print(f"{key:>32}: {value}")
    print(json.dumps(out))
    return 1 if out["lost"] or out["doubled"] else 0


def _compare_cluster(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    """The same load on the single Redis and on the local Redis Cluster (started when not running), in the
    order single, cluster, cluster, single, so a machine whose speed drifts during the run weighs on both
    alike (as ``bench api`` drives its processes in turns): the cluster's figures, ``events_per_s`` being each
    deployment's backlog capacity averaged over its two runs (their ratio is the cost of one transaction per
    partition and of the outboxes); ``single`` and ``cluster`` hold each one's first run in full."""
    from streamrec.localstack import LocalStack

    LocalStack(settings, progress=_say).up(redis_cluster=True)
    cluster_url = f"redis+cluster://{settings.bind_host}:{settings.redis_cluster_port}/0"
    on_cluster = settings.model_copy(update={"redis_url": cluster_url, "redis_cluster": True})
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": []}
    for turn, name in enumerate(("single", "cluster", "cluster", "single"), start=1):
        where = cluster_url if name == "cluster" else settings.redis_url.split("@")[-1]
        _say(f"{turn}/4: the {'Redis Cluster' if name == 'cluster' else 'single Redis'} at {where}")
        runs[name].append(measure(on_cluster if name == "cluster" else settings, cfg))
    single, cluster = runs["single"][0], runs["cluster"][0]
    rates = {name: [r.get("capacity_events_per_s", r["events_per_s"]) for r in rs] for name, rs in runs.items()}
    rate, single_rate = (round(sum(rates[n]) / len(rates[n]), 1) for n in ("cluster", "single"))
    every = [r for rs in runs.values() for r in rs]
    return {"events_per_s": rate, "single_events_per_s": single_rate,
            "cluster_to_single": round(rate / single_rate, 3) if single_rate else None,
            "lost": sum(r["lost"] for r in every), "doubled": sum(r["doubled"] for r in every),
            "runs_events_per_s": rates,
            "freshness_p50_ms": cluster["freshness_p50_ms"], "single_freshness_p50_ms": single["freshness_p50_ms"],
            "freshness_p99_ms": cluster["freshness_p99_ms"], "single_freshness_p99_ms": single["freshness_p99_ms"],
            "worker_cpu_us_per_event": cluster["worker_cpu_us_per_event"],
            "single_worker_cpu_us_per_event": single["worker_cpu_us_per_event"],
            "cluster": cluster, "single": single}


def measure(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    """One run of the benchmark (see the module docstring): its figures."""
    s = isolated(settings, uuid.uuid4().hex[:8])
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-bench-stream-"))
    stats_file, log_file = tmp / "batches.jsonl", tmp / "worker.log"
    proc: subprocess.Popen[bytes] | None = None
    capacity: dict[str, Any] | None = None
    probe = float("nan")
    try:
        ensure_topics(s)
        _say(f"publishing a random model: {cfg.items} items × {cfg.factors} factors (prefix {s.redis_prefix})")
        publish_model(s, cfg.items, cfg.factors, cfg.seed)
        _say(f"generating {WARMUP_EVENTS} + {cfg.events} simulated events ({cfg.users} users)")
        simulated = make_events(cfg, WARMUP_EVENTS + cfg.events)
        warmup, measured = wire_events(simulated[:WARMUP_EVENTS]), wire_events(simulated[WARMUP_EVENTS:])
        backlog = wire_events(renamed(simulated[WARMUP_EVENTS:], "cap")) if cfg.capacity else []
        total = WARMUP_EVENTS + len(backlog) + cfg.events
        with log_file.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "worker", "--stats-file", str(stats_file),
                                     "--log-level", "info"], env=worker_env(s), stdout=log, stderr=subprocess.STDOUT)
        _say(f"worker pid {proc.pid} started; warming up with {WARMUP_EVENTS} events")
        produce(s, warmup, 2_000)
        wait_applied(s, 180, proc)
        rate = cfg.rate
        if backlog:
            capacity, probe = _capacity(s, proc, stats_file, backlog)
            if cfg.rate_from_capacity:
                rate = round(cfg.capacity_share * capacity["events_per_s"], -1)
        start_offsets = end_offsets(s, s.event_topics)
        _say(f"rate: producing {cfg.events} events at {rate:g}/s")
        figures = _phase(s, proc, stats_file, measured, rate)
        figures.update(exactly_once(s, [*warmup, *backlog, *measured]))
        if figures["lost"] or figures["doubled"]:
            _say(f"NOT exactly once: {figures['lost']} events lost, {figures['doubled']} doubled of {total}")
        if cfg.core:
            _say("running the processing core on the same events without Kafka")
            figures.update(core_run(s, start_offsets, cfg))
    except BaseException:
        if log_file.exists():
            _say("worker log tail:\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        _stop(proc)
        cleanup(s, [s.redis_prefix, s.redis_prefix + "-core_events_per_s",
                    s.redis_prefix + "-core_events_per_s_covisitation"])
        if cfg.keep_files:
            _say(f"worker log and per-batch stats kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return _report(cfg, s, rate, figures, capacity, probe)


def exactly_once(s: Settings, events: Events) -> dict[str, int]:
    """Events lost and doubled: per user, the events produced against the user's applied-event count."""
    produced = Counter(key.decode() for _, key, _, _ in events)
    store = RedisStore(s)
    try:
        applied = event_counts(store, list(produced))
    finally:
        store.close()
    return {"lost": sum(max(0, n - applied[u]) for u, n in produced.items()),
            "doubled": sum(max(0, applied[u] - n) for u, n in produced.items())}


def _phase(s: Settings, proc: subprocess.Popen[bytes], stats_file: Path, events: Events,
           rate: float) -> dict[str, Any]:
    """Produce ``events`` at ``rate`` (0: as fast as possible), wait until applied; the phase's figures."""
    cpu0 = cpu_seconds(proc.pid)
    since = now_ms()
    first, last = produce(s, events, rate)
    produced_per_s = len(events) / max((last - first) / 1000, 1e-9)
    _say(f"produced at {produced_per_s:.0f}/s; waiting for the worker")
    wait_applied(s, max(120.0, 5 * len(events) / max(rate, 1_000.0)), proc)
    timed = read_stats(stats_file, since, len(events))
    cpu = cpu_seconds(proc.pid) - cpu0
    figures = summarise(timed, first)
    applied = max(figures["applied"], 1)
    figures.update(produced_per_s=produced_per_s, worker_cpu_us_per_event=1e6 * cpu / applied,
                   solver_cpu_us_per_event=1e6 * figures["solver_cpu_s"] / applied)
    return figures


def _capacity(s: Settings, proc: subprocess.Popen[bytes], stats_file: Path,
              backlog: Events) -> tuple[dict[str, Any], float]:
    """The worker's backlog capacity while a producer runs beside it, as in the rate phase.

    A third of the backlog is produced at once (nothing else runs while the worker drains it: the
    uncontended rate, returned second); the rest is produced at 1.25 × that rate, so a backlog builds while
    the producer and Kafka take their share of the machine's cores, as they do in the rate phase. The
    worker's steady rate over that second part is its capacity (on a machine with cores to spare the two
    agree; on 2 shared cores the second is lower, and 0.7 × it is a load the worker sustains).
    """
    cut = len(backlog) // 3
    _say(f"capacity: {cut} events (the measured ones, by renamed users) produced at once: a backlog to drain")
    uncontended = _phase(s, proc, stats_file, backlog[:cut], 0)["events_per_s"]
    paced = round(1.25 * uncontended, -1)
    _say(f"capacity: {uncontended:.0f} events/s alone; {len(backlog) - cut} more produced at {paced:g}/s")
    figures = _phase(s, proc, stats_file, backlog[cut:], paced)
    _say(f"capacity: {figures['events_per_s']:.0f} events/s draining a backlog beside the producer")
    return figures, uncontended


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _report(cfg: BenchConfig, s: Settings, rate: float, f: dict[str, Any],
            capacity: dict[str, Any] | None, uncontended: float) -> dict[str, Any]:
    """The benchmark's JSON: the rate phase's figures first, then the capacity phase's and the core's."""
    worker_us, solver_us = f["worker_cpu_us_per_event"], f["solver_cpu_us_per_event"]
    out: dict[str, Any] = {
        "events": f["applied"], "events_per_s": round(f["events_per_s"], 1),
        "freshness_p50_ms": round(f["freshness_p50_ms"], 1), "freshness_p99_ms": round(f["freshness_p99_ms"], 1),
        "freshness_max_ms": f["freshness_max_ms"],
        "worker_cpu_us_per_event": round(worker_us, 2), "solver_cpu_us_per_event": round(solver_us, 3),
        "worker_to_solver_cpu": round(worker_us / solver_us, 2) if solver_us else None,
        "rate": rate, "rate_from_capacity": cfg.rate_from_capacity and capacity is not None,
        "produced_per_s": round(f["produced_per_s"], 1),
        "end_to_end_events_per_s": round(f["end_to_end_events_per_s"], 1),
        "solver_events_per_s": round(f["solver_events_per_s"], 1),
        "worker_busy": round(f["batch_s_total"] / (f["applied"] / f["events_per_s"]), 3),
        "batches": f["batches"], "mean_batch": round(f["mean_batch"], 1),
        "lost": f["lost"], "doubled": f["doubled"],
    }
    if capacity is not None:
        cw, cs = capacity["worker_cpu_us_per_event"], capacity["solver_cpu_us_per_event"]
        out.update(capacity_events_per_s=round(capacity["events_per_s"], 1),
                   capacity_uncontended_events_per_s=round(uncontended, 1),
                   capacity_worker_cpu_us_per_event=round(cw, 2), capacity_solver_cpu_us_per_event=round(cs, 3),
                   capacity_worker_to_solver_cpu=round(cw / cs, 2) if cs else None,
                   capacity_mean_batch=round(capacity["mean_batch"], 1))
    if "core_events_per_s" in f:
        out["core_events_per_s"] = round(f["core_events_per_s"], 1)
        out["core_events_per_s_covisitation"] = round(f["core_events_per_s_covisitation"], 1)
        out["covisitation_ratio"] = round(f["core_events_per_s_covisitation"] / f["core_events_per_s"], 3)
    out.update(worker_covisitation=s.worker_covisitation, factors=cfg.factors, items=cfg.items,
               cores=os.cpu_count(), redis_cluster=RedisStore(s).cluster, partitions=s.partitions)
    return out
