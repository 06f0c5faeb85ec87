"""Benchmark: the batch refit end to end versus the bare implicit fit on the same matrix, in one run.

The 1.5 M Globo clicks are produced as contract events (canonical JSON, keyed by user) to isolated
topics. The steady-state refit -- what ``batch run --every`` does each time -- starts from the
previous run's snapshot, reads the events of the last day, merges them, fits the whole matrix,
publishes the version (235 k user vectors) and re-folds; the cold refit reads all 1.5 M events from
an empty snapshot. After each, the same ``train_als`` call is timed again on exactly the matrix the
refit fitted. The ratio is ``refit_s / implicit_fit_s``. Topics, Redis keys and snapshots are removed
afterwards.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from confluent_kafka import KafkaException, Producer

from batch.reader import Progress
from batch.refit import run_refit
from models.training import ALSModelFactors, ALSParams, train_als
from streamrec.events import Event, EventType
from streamrec.kafka_io import admin_client, ensure_topics, producer_config
from streamrec.settings import REPO_ROOT, Settings
from streamrec.store import RedisStore

DATASET = Path("shared/datasets/globo-g1-clicks/clicks_2017-10-01_to_08.csv.gz")


class BenchError(RuntimeError):
    """The benchmark cannot run (missing dataset, services down)."""


def default_dataset() -> Path:
    """The clicks file next to the repository (``../shared/...`` from the repo root)."""
    return REPO_ROOT.parent / DATASET


def _load(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise BenchError(f"dataset not found: {path} (the Globo clicks belong in ../shared/datasets relative to the "
                         "repository root; pass --dataset PATH to use another copy)")
    df = pd.read_csv(path, dtype={"ts_ms": np.int64, "user_id": str, "session_id": str, "item_id": str})
    missing = {"ts_ms", "user_id", "session_id", "item_id"} - set(df.columns)
    if missing:
        raise BenchError(f"{path} lacks columns {sorted(missing)}")
    return df


def _values(df: pd.DataFrame, seed: int) -> list[bytes]:
    """Canonical wire JSON of every click (what ``Event.to_json_bytes`` writes), built without pydantic."""
    raw = np.random.default_rng(seed).bytes(16 * len(df)).hex()
    ids = (str(uuid.UUID(raw[k * 32 : (k + 1) * 32])) for k in range(len(df)))
    out = [f'{{"event_id":"{e}","user_id":"{u}","item_id":"{i}","type":"click","ts":{t},"session_id":"{s}"}}'.encode()
           for e, u, i, t, s in zip(ids, df.user_id, df.item_id, df.ts_ms, df.session_id, strict=True)]
    for k in (0, len(df) // 2, len(df) - 1):  # the shortcut must produce exactly the contract's bytes
        row = df.iloc[k]
        ev = Event(event_id=uuid.UUID(out[k][13:49].decode()), user_id=row.user_id, item_id=row.item_id,
                   type=EventType.CLICK, ts=int(row.ts_ms), session_id=row.session_id)
        if ev.to_json_bytes() != out[k]:
            raise BenchError(f"canonical event mismatch: {out[k]!r} != {ev.to_json_bytes()!r}")
    return out


def _produce(settings: Settings, df: pd.DataFrame, progress: Progress, seed: int) -> None:
    values = _values(df, seed)
    keys = [u.encode() for u in df.user_id]
    producer = Producer(producer_config(settings, **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 50, "batch.size": 1_000_000,
        "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
    }))
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    produce, topic = producer.produce, settings.topic_clicks
    for n, (k, v) in enumerate(zip(keys, values, strict=True)):
        produce(topic, v, k, on_delivery=on_delivery)
        if n % 200_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        raise BenchError(f"{left} events undelivered, {len(failed)} failed ({failed[:1]})")
    progress(f"produced {len(values):,} events to {topic}")


def _cleanup(settings: Settings, snapshot_dir: Path) -> None:
    store = RedisStore(settings)
    try:
        store.delete_prefix()
    finally:
        store.close()
    admin = admin_client(settings)  # keep a reference: a destroyed client cancels its pending requests
    futures = admin.delete_topics(
        [settings.topic_clicks, settings.topic_purchases, settings.topic_dead_letter], operation_timeout=30)
    for fut in futures.values():
        with contextlib.suppress(KafkaException):  # a topic that was never created
            fut.result(30)
    shutil.rmtree(snapshot_dir, ignore_errors=True)


def _quiesce(settings: Settings, progress: Progress, limit_s: float = 120.0) -> None:
    """Wait while Redis rewrites its append-only file or saves a snapshot.

    A publish appends ~60 MB to the AOF, which can start a rewrite in a forked child that runs for
    seconds on one of the two cores. Between hourly runs it would be long finished; here it would
    land in the next timed fit, so each timing starts on a quiet server.
    """
    store = RedisStore(settings)
    try:
        deadline, said = time.monotonic() + limit_s, False
        while time.monotonic() < deadline:
            info = store.client.info("persistence")
            if not (info.get("aof_rewrite_in_progress") or info.get("rdb_bgsave_in_progress")):
                return
            if not said:
                progress("waiting for Redis to finish rewriting its append-only file")
                said = True
            time.sleep(0.2)
    finally:
        store.close()


def _timed_refits(bench: Settings, params: ALSParams, fit: Any, captured: list[sp.csr_matrix], repeat: int,
                  label: str, before: Any, progress: Progress) -> list[dict[str, Any]]:
    """``repeat`` pairs: one refit end to end, then the bare fit on the matrix that refit fitted."""
    runs = []
    for k in range(repeat):
        rebuild = before()
        _quiesce(bench, progress)
        progress(f"[{label} {k + 1}/{repeat}] timing the refit end to end (read, aggregate, fit, publish, re-fold)")
        t0 = time.perf_counter()
        summary = run_refit(bench, fit=fit, rebuild=rebuild, progress=progress)
        refit_s = time.perf_counter() - t0
        progress(f"refit took {refit_s:.2f}s; timing the bare implicit fit on the same matrix")
        _quiesce(bench, progress)
        bare = train_als(captured[-1], params)
        runs.append({"refit_s": refit_s, "implicit_fit_s": bare.fit_seconds, **summary})
        progress(f"{label}: refit {refit_s:.2f}s, bare fit {bare.fit_seconds:.2f}s: "
                 f"ratio {refit_s / bare.fit_seconds:.3f}")
    return runs


def _figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of a series of pairs (the ratio: of the per-pair ratios) and where the time goes."""

    def med(key: str) -> float:
        return round(float(np.median([r[key] for r in runs])), 3)

    return {
        "refit_s": med("refit_s"), "implicit_fit_s": med("implicit_fit_s"),
        "ratio": round(float(np.median([r["refit_s"] / r["implicit_fit_s"] for r in runs])), 3),
        "ratios": [round(r["refit_s"] / r["implicit_fit_s"], 3) for r in runs],
        "read": runs[0]["read"], "refit_inner_fit_s": med("fit_s"),
        # overhead = the refit minus its own fit: the part this project controls
        "overhead_s": round(float(np.median([r["refit_s"] - r["fit_s"] for r in runs])), 3),
        "snapshot_load_s": med("snapshot_load_s"), "read_s": med("read_s"), "merge_s": med("merge_s"),
        "publish_s": med("publish_s"), "refold_s": med("refold_s"), "read_processes": runs[0]["read_processes"],
    }


def run(settings: Settings, dataset: str | None = None, progress: Progress = print, repeat: int = 1,
        new_days: float = 1.0, cold: bool = True) -> dict[str, Any]:
    """Time the refit against the bare fit, in steady state and (``cold``) from an empty snapshot.

    Steady state is how the job runs (``batch run --every``): the events older than the last
    ``new_days`` days are produced and refitted once (the previous run, not timed), then the newest
    events are produced and the timed run reads only those, merges them into the snapshot and fits the
    whole matrix. Each repetition restores the previous run's snapshot. The cold runs read every
    event from the topics (a first run, or ``--rebuild``). Figures are medians of ``repeat`` pairs.
    """
    if repeat < 1:
        raise BenchError("--repeat must be at least 1")
    if new_days <= 0:
        raise BenchError("--new-days must be positive")
    df = _load(Path(dataset) if dataset else default_dataset())
    cutoff = int(df.ts_ms.max()) - int(new_days * 86_400_000)
    old, new = df[df.ts_ms <= cutoff], df[df.ts_ms > cutoff]
    if old.empty:
        raise BenchError(f"--new-days {new_days} covers the whole dataset: nothing is left for the previous run")
    tag = uuid.uuid4().hex[:8]
    snapshot_dir = Path(tempfile.mkdtemp(prefix="bench-refit-"))
    saved = Path(tempfile.mkdtemp(prefix="bench-refit-prev-")) / "snapshot"
    bench = settings.model_copy(update={
        "topic_clicks": f"bench-refit-{tag}.clicks", "topic_purchases": f"bench-refit-{tag}.purchases",
        "topic_dead_letter": f"bench-refit-{tag}.dead-letter", "consumer_group": f"bench-refit-{tag}",
        "redis_prefix": f"bench-refit-{tag}", "batch_snapshot_dir": snapshot_dir, "model_grace_s": 0.0,
    })
    params = ALSParams(factors=bench.als_factors, regularization=bench.als_regularization,
                       alpha=bench.als_alpha, iterations=bench.als_iterations)
    captured: list[sp.csr_matrix] = []

    def fit(matrix: sp.csr_matrix, fit_params: ALSParams) -> ALSModelFactors:
        captured.append(matrix)
        return train_als(matrix, fit_params)

    def restore_previous() -> bool:  # steady state: start from the previous run's snapshot
        shutil.rmtree(snapshot_dir, ignore_errors=True)
        shutil.copytree(saved, snapshot_dir)
        return False

    try:
        ensure_topics(bench)
        _produce(bench, old, progress, seed=7)
        progress(f"the previous run (not timed): refit on the {len(old):,} events up to {new_days:g} day(s) "
                 "before the newest")
        run_refit(bench, progress=progress)
        shutil.copytree(snapshot_dir, saved)
        _produce(bench, new, progress, seed=8)
        steady = _timed_refits(bench, params, fit, captured, repeat, "steady state", restore_previous, progress)
        cold_runs = (_timed_refits(bench, params, fit, captured, repeat, "cold", lambda: True, progress)
                     if cold else [])
    finally:
        _cleanup(bench, snapshot_dir)
        shutil.rmtree(saved.parent, ignore_errors=True)
    out: dict[str, Any] = {"events": len(df), "new_events": len(new), "new_days": new_days, "repeat": repeat,
                           **_figures(steady), "n_users": steady[0]["n_users"], "n_items": steady[0]["n_items"],
                           "n_interactions": steady[0]["n_interactions"]}
    if cold_runs:
        out["cold"] = _figures(cold_runs)
        out["cold_ratio"] = out["cold"]["ratio"]
    return out
