"""Benchmark: the batch refit end to end versus the bare implicit fit on the same matrix, in one run.

The 1.5 M Globo clicks are produced as contract events (canonical JSON, keyed by user) to isolated
topics; then ``batch.refit.run_refit`` runs against them with an empty snapshot -- read every event,
aggregate, fit, publish the version (235 k user vectors), re-fold, clean up -- and the same
``train_als`` call is timed again on exactly the matrix the refit fitted. The ratio is
``refit_s / implicit_fit_s``. Topics, Redis keys and the snapshot are removed afterwards.
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
from streamrec.kafka_io import admin_client, ensure_topics
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


def _values(df: pd.DataFrame) -> list[bytes]:
    """Canonical wire JSON of every click (what ``Event.to_json_bytes`` writes), built without pydantic."""
    raw = np.random.default_rng(7).bytes(16 * len(df)).hex()
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


def _produce(settings: Settings, df: pd.DataFrame, progress: Progress) -> None:
    values = _values(df)
    keys = [u.encode() for u in df.user_id]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 50, "batch.size": 1_000_000, "compression.type": "lz4", "log_level": 0,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000})
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
        keys = list(store.client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
        for k in range(0, len(keys), 500):
            store.client.unlink(*keys[k : k + 500])
    finally:
        store.close()
    admin = admin_client(settings)  # keep a reference: a destroyed client cancels its pending requests
    futures = admin.delete_topics(
        [settings.topic_clicks, settings.topic_purchases, settings.topic_dead_letter], operation_timeout=30)
    for fut in futures.values():
        with contextlib.suppress(KafkaException):  # a topic that was never created
            fut.result(30)
    shutil.rmtree(snapshot_dir, ignore_errors=True)


def run(settings: Settings, dataset: str | None = None, progress: Progress = print, repeat: int = 1) -> dict[str, Any]:
    """Produce the dataset once, then ``repeat`` times: time the refit and the bare fit; returns the figures.

    Each repetition after the first rebuilds the snapshot, so every refit reads all the events again.
    With several repetitions the figures are medians (the ratio: of the per-repetition ratios), which
    keeps a shared machine's load swings from deciding the result.
    """
    if repeat < 1:
        raise BenchError("--repeat must be at least 1")
    df = _load(Path(dataset) if dataset else default_dataset())
    tag = uuid.uuid4().hex[:8]
    snapshot_dir = Path(tempfile.mkdtemp(prefix="bench-refit-"))
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

    runs: list[dict[str, Any]] = []
    try:
        ensure_topics(bench)
        _produce(bench, df, progress)
        for k in range(repeat):
            progress(f"[{k + 1}/{repeat}] timing the refit end to end (read, aggregate, fit, publish, re-fold)")
            t0 = time.perf_counter()
            summary = run_refit(bench, fit=fit, rebuild=k > 0, progress=progress)
            refit_s = time.perf_counter() - t0
            progress(f"refit took {refit_s:.2f}s; timing the bare implicit fit on the same matrix")
            bare = train_als(captured[-1], params)
            runs.append({"refit_s": refit_s, "implicit_fit_s": bare.fit_seconds, **summary})
            progress(f"refit {refit_s:.2f}s, bare fit {bare.fit_seconds:.2f}s: ratio {refit_s / bare.fit_seconds:.3f}")
    finally:
        _cleanup(bench, snapshot_dir)

    def med(key: str) -> float:
        return round(float(np.median([r[key] for r in runs])), 3)

    return {
        "events": int(runs[0]["read"]), "refit_s": med("refit_s"), "implicit_fit_s": med("implicit_fit_s"),
        "ratio": round(float(np.median([r["refit_s"] / r["implicit_fit_s"] for r in runs])), 3),
        "repeat": repeat, "ratios": [round(r["refit_s"] / r["implicit_fit_s"], 3) for r in runs],
        # where the time beyond the fit goes (medians); overhead = refit minus the refit's own fit
        "refit_inner_fit_s": med("fit_s"), "overhead_s": round(float(np.median(
            [r["refit_s"] - r["fit_s"] for r in runs])), 3),
        "read_s": med("read_s"), "merge_s": med("merge_s"), "publish_s": med("publish_s"),
        "refold_s": med("refold_s"), "n_users": runs[0]["n_users"], "n_items": runs[0]["n_items"],
        "n_interactions": runs[0]["n_interactions"], "read_processes": runs[0]["read_processes"],
    }
