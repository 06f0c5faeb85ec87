"""One batch run: read the new events, merge the snapshot, fit implicit ALS, publish, re-fold, clean up.

A run either publishes a complete new version and makes it current, or fails with a
:class:`RefitError` naming the stage and leaves the serving version alone: a version is activated
only after every one of its keys is written, and a half-written one is unlinked. Every run's outcome
is recorded in Redis (``<p>:batch:last_run``, and ``<p>:batch:last_failure`` for failures) and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from batch import snapshot as snapshots
from batch.content_fit import ColdStart, fit_cold_start, publish_cold_start
from batch.fastredis import BulkStore
from batch.foldback import refold_users, users_since
from batch.reader import TP, Progress, ReadStats, read_events
from batch.snapshot import Snapshot, SnapshotError, SnapshotOutdated
from models.rank_features import item_stats
from models.training import ALSModelFactors, ALSParams, train_als
from models.weighting import weighted_matrix
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.store import RedisStore, to_bytes
from streamrec.store.content import erased_users, forget_erased
from streamrec.store.models import (
    activate,
    cleanup_versions,
    current_version,
    list_versions,
    new_version_name,
    version_keys,
    write_version,
)

log = logging.getLogger("streamrec.batch")
FitFn = Callable[[sp.csr_matrix, ALSParams], ALSModelFactors]


class RefitError(RuntimeError):
    """A failed run. ``stage`` is one of lock, snapshot, read, no_data, fit, publish, refold."""

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"batch run failed at {stage}: {detail}")
        self.stage = stage
        self.detail = detail


def last_run_key(store: RedisStore) -> str:
    """Where the outcome of the last run is recorded."""
    return store.keys.batch_last_run


def last_failure_key(store: RedisStore) -> str:
    """Where the last failed run is recorded."""
    return store.keys.batch_last_failure


def als_params(settings: Settings) -> ALSParams:
    """The ALS hyper-parameters of these settings."""
    return ALSParams(factors=settings.als_factors, regularization=settings.als_regularization,
                     alpha=settings.als_alpha, iterations=settings.als_iterations)


@dataclass
class TrainingSet:
    """The weighted matrix and the ids of its rows and columns (users/items with some weight)."""

    matrix: sp.csr_matrix
    user_ids: list[str]
    item_ids: list[str]
    ref_ms: int
    item_stats: np.ndarray | None = None  # models.rank_features.item_stats, in item_ids order


def training_set(snap: Snapshot, settings: Settings, at_ms: int) -> TrainingSet:
    """Weight the snapshot at ``at_ms`` and drop users and items left without any weight."""
    ref = max(at_ms, snap.ref_ms)
    w = snap.weights(settings.type_weights, ref)
    keep = w > 0
    u, i = snap.user_idx[keep], snap.item_idx[keep]
    used_u = np.zeros(len(snap.users), np.bool_)
    used_u[u] = True
    used_i = np.zeros(len(snap.items), np.bool_)
    used_i[i] = True
    u_map, i_map = np.cumsum(used_u) - 1, np.cumsum(used_i) - 1
    matrix = weighted_matrix(u_map[u], i_map[i], w[keep], shape=(int(used_u.sum()), int(used_i.sum())))
    return TrainingSet(matrix, [snap.users[k] for k in np.flatnonzero(used_u).tolist()],
                       [snap.items[k] for k in np.flatnonzero(used_i).tolist()], ref,
                       item_stats(i_map[i], snap.count[keep], int(used_i.sum())))


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """One batch run at a time per snapshot directory (a second one fails fast instead of racing)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RefitError("lock", f"another batch run is using {directory}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_refit(
    settings: Settings, store: RedisStore | None = None, *, fit: FitFn = train_als, rebuild: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the refit once and return its summary; raise :class:`RefitError` (and record it) on failure."""
    own_store = store is None
    store = store or RedisStore(settings)
    started = time.time()
    try:
        with run_lock(settings.snapshot_dir):
            summary = _run(settings, store, fit, rebuild, progress or (lambda _m: None))
        summary["total_s"] = round(time.time() - started, 3)
        with contextlib.suppress(Exception):
            store.client.set(last_run_key(store), json.dumps({"status": "ok", "at": time.time(), **summary}))
        log.info("batch run published %s in %.1fs", summary["version"], summary["total_s"])
        return summary
    except RefitError as exc:
        _record_failure(store, exc, started)
        raise
    except Exception as exc:  # anything unexpected still leaves the model serving and says why
        err = RefitError("unexpected", f"{type(exc).__name__}: {exc}")
        _record_failure(store, err, started)
        raise err from exc
    finally:
        if own_store:
            store.close()


def _stage(stage: str) -> contextlib.AbstractContextManager[None]:
    """Turn any exception inside the block into a RefitError for ``stage``."""

    @contextlib.contextmanager
    def wrap() -> Iterator[None]:
        try:
            yield
        except RefitError:
            raise
        except Exception as exc:
            raise RefitError(stage, f"{type(exc).__name__}: {exc}") from exc

    return wrap()


def _run(settings: Settings, store: RedisStore, fit: FitFn, rebuild: bool, progress: Progress) -> dict[str, Any]:
    t0 = time.perf_counter()
    snap = _load_snapshot(settings, rebuild)
    load_s = time.perf_counter() - t0
    progress(f"snapshot: {snap.events:,} events, {len(snap):,} user-item pairs")
    merged, end, stats, merge_s = _read_and_merge(settings, snap, progress)
    erased = erased_users(store)  # deleted users (DELETE /v1/users/{id}): never fitted again
    merged = snapshots.without_users(merged, erased)
    duplicates = merged.duplicates - snap.duplicates
    train = training_set(merged, settings, now_ms())
    progress(f"read {stats.read:,} new events in {stats.seconds:.1f}s; fitting {train.matrix.shape[0]:,} users x "
             f"{train.matrix.shape[1]:,} items, {train.matrix.nnz:,} interactions")
    if train.matrix.nnz == 0:
        raise RefitError("no_data", "no interactions to fit: the event topics hold no valid events yet")
    t_fit = time.perf_counter()
    model, saved = _fit_while_saving(settings, fit, train, merged)
    fit_wall_s = time.perf_counter() - t_fit
    progress(f"fitted in {model.fit_seconds:.1f}s; publishing")

    cold = _cold_start(settings, store, train, model)
    version = new_version_name()
    meta = _metadata(settings, train, model, merged, end)
    t_pub = time.perf_counter()
    abandoned = _publish(settings, store, version, meta, train, model, cold)
    publish_s = time.perf_counter() - t_pub
    progress(f"published {version} in {publish_s:.1f}s; re-folding users with newer events")

    t_fold = time.perf_counter()
    with _stage("refold"):  # the new version is live now; a failure here is reported, not rolled back
        item_index = {item: k for k, item in enumerate(train.item_ids)}
        recent = users_since(settings, end)
        fold = refold_users(settings, store, version, model.item_factors, model.gram, item_index, recent)
    removed = cleanup_versions(store, settings.model_grace_s)
    if saved:  # the saved snapshot no longer holds them
        forget_erased(store, erased)
    return {
        "version": version, **stats.as_dict(), "duplicates": duplicates,
        "n_users": len(train.user_ids), "n_items": len(train.item_ids), "n_interactions": int(train.matrix.nnz),
        "snapshot_load_s": round(load_s, 3), "merge_s": round(merge_s, 3), "fit_s": round(model.fit_seconds, 3),
        "fit_wall_s": round(fit_wall_s, 3),
        "publish_s": round(publish_s, 3),
        "refold_s": round(time.perf_counter() - t_fold, 3), **fold, "removed_versions": removed,
        "snapshot_saved": saved, "abandoned_versions_removed": abandoned,
        "source_offsets": meta["source_offsets"], **(cold.summary if cold is not None else {}),
    }


def _cold_start(settings: Settings, store: RedisStore, train: TrainingSet, model: ALSModelFactors) -> ColdStart | None:
    """The content and profile regressions (batch/content_fit.py); a failure is logged, never fails the run:
    the version is then published without cold start."""
    try:
        return fit_cold_start(settings, store, train.item_ids, train.user_ids, train.matrix, model)
    except Exception:
        log.exception("cold start (content and profile regressions) failed; publishing without it")
        return None


def _load_snapshot(settings: Settings, rebuild: bool) -> Snapshot:
    """The local snapshot of every event read so far (empty with ``rebuild``)."""
    half_life_s = settings.half_life_days * 86_400 if settings.half_life_days else None
    with _stage("snapshot"):
        if rebuild:
            snapshots.discard(settings.snapshot_dir)
        try:
            return snapshots.load(settings.snapshot_dir, settings.event_topics, half_life_s)
        except SnapshotOutdated as exc:  # another format or other types: its sums cannot be read as ours
            log.warning("%s; re-reading the topics from the beginning", exc)
            snapshots.discard(settings.snapshot_dir)
            return snapshots.load(settings.snapshot_dir, settings.event_topics, half_life_s)
        except SnapshotError as exc:
            raise RefitError("snapshot", str(exc)) from None


def _read_and_merge(settings: Settings, snap: Snapshot,
                    progress: Progress) -> tuple[Snapshot, dict[TP, int], ReadStats, float]:
    """Read the events after the snapshot's offsets and merge them in: (merged, end offsets, stats, merge s)."""
    with _stage("read"):
        events, end, stats = read_events(settings, snap.offsets, settings.event_topics,
                                         processes=settings.batch_read_processes, progress=progress)
        if stats.invalid:
            log.warning("skipped %d invalid events %s (the worker dead-letters them)",
                        sum(stats.invalid.values()), dict(stats.invalid))
        if stats.lost_to_retention:
            log.warning("%d events were removed by topic retention before this run read them: raise the topics' "
                        "retention (docs/batch.md)", stats.lost_to_retention)
        t_merge = time.perf_counter()
        merged = snapshots.merge(snap, events, end, invalid=sum(stats.invalid.values()),
                                 dedup_window_ms=settings.dedup_window_s * 1000)
        if merged.duplicates > snap.duplicates:
            log.info("dropped %d events whose event_id was already counted", merged.duplicates - snap.duplicates)
        return merged, end, stats, time.perf_counter() - t_merge


def _fit_while_saving(settings: Settings, fit: FitFn, train: TrainingSet, merged: Snapshot
                      ) -> tuple[ALSModelFactors, bool]:
    """Fit the model while a thread saves the merged snapshot (it only needs the disk); (model, saved)."""
    saver_error: list[BaseException] = []

    def save() -> None:
        try:
            snapshots.save(merged, settings.snapshot_dir, settings.event_topics)
        except BaseException as exc:
            saver_error.append(exc)

    saver = threading.Thread(target=save, name="snapshot-save")
    saver.start()
    try:
        with _stage("fit"):
            model = fit(train.matrix, als_params(settings))
            _check_model(model, train)
    finally:
        saver.join()
    if saver_error:  # the model is still good; the next run re-reads these events
        log.warning("could not save the snapshot: %s", saver_error[0])
    return model, not saver_error


def _metadata(settings: Settings, train: TrainingSet, model: ALSModelFactors, merged: Snapshot,
              end: dict[TP, int]) -> dict[str, Any]:
    """The version's metadata: when and from which offsets it was trained, its parameters, its sizes."""
    return {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "trained_at_ms": now_ms(),
        "source_offsets": {f"{t}:{p}": o for (t, p), o in sorted(end.items())},
        "params": {"factors": settings.als_factors, "regularization": settings.als_regularization,
                   "alpha": settings.als_alpha, "iterations": settings.als_iterations,
                   **{f"{name}_weight": w for name, w in settings.type_weights.items()},
                   "half_life_days": settings.half_life_days},
        "decay_ref_ms": train.ref_ms, "fit_seconds": round(model.fit_seconds, 3),
        "n_interactions": int(train.matrix.nnz), "events": merged.events, "invalid_events": merged.invalid,
        "duplicate_events": merged.duplicates,
    }


def _publish(settings: Settings, store: RedisStore, version: str, meta: dict[str, Any], train: TrainingSet,
             model: ALSModelFactors, cold: ColdStart | None = None) -> list[str]:
    """Write the version and make it current; never leaves a half-written version. Returns the abandoned
    versions removed first."""
    with _stage("publish"):
        abandoned = remove_abandoned_versions(store)
        bulk = BulkStore.like(store, settings)
        try:
            write_version(bulk, version, meta, train.item_ids, model.item_factors, model.gram, train.user_ids,
                          model.user_factors, train.item_stats)
            # XᵀX of the user factors: the worker folds new items in with it (it would otherwise sum it
            # from the users hash itself)
            store.client.set(store.keys.model(version, "user_gram"), to_bytes(model.user_gram))
            if cold is not None:  # before activation: new items are recommendable from the version's first read
                publish_cold_start(store, version, cold, int(model.item_factors.shape[1]))
            activate(store, version)
        except BaseException:
            with contextlib.suppress(Exception):  # never leave a half-written version behind
                if store.client.get(store.keys.current) != version.encode():
                    store.client.unlink(*version_keys(store, version))
            raise
        finally:
            bulk.close()
    return abandoned


def remove_abandoned_versions(store: RedisStore) -> list[str]:
    """Unlink the keys of versions that are neither current nor in the version list; returns their names.

    A publish that is killed (SIGKILL, OOM, power loss) never reaches the cleanup in ``_run``'s except
    block, so its half-written keys (the users hash can be hundreds of MB) would stay in Redis forever:
    ``cleanup_versions`` only knows listed versions. Runs under the run lock before each publish. A
    version still being written by a concurrent run elsewhere (a misconfiguration the lock cannot see)
    would lose its keys and that run would fail at ``activate``; the serving version is never touched.
    """
    keep = {v for v, _ in list_versions(store)}
    current = current_version(store)
    if current is not None:
        keep.add(current)
    prefix = f"{store.keys.prefix}:model:"
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*:*"  # glob-escape the prefix
    doomed: dict[str, list[bytes]] = {}
    for raw in store.client.scan_iter(match=pattern, count=10_000):
        version = raw.decode()[len(prefix):].split(":", 1)[0]
        if version not in keep:
            doomed.setdefault(version, []).append(raw)
    for version, keys in doomed.items():
        for start in range(0, len(keys), 500):
            store.client.unlink(*keys[start : start + 500])
        log.warning("removed the keys of abandoned model version %s (a publish that never completed)", version)
    return sorted(doomed)


def _check_model(model: ALSModelFactors, train: TrainingSet) -> None:
    """Refuse to publish factors of the wrong shape or with NaN/inf (a diverged or broken fit)."""
    n_users, n_items = train.matrix.shape
    if model.user_factors.shape[0] != n_users or model.item_factors.shape[0] != n_items:
        raise RefitError("fit", f"factor shapes {model.user_factors.shape}/{model.item_factors.shape} do not "
                         f"match the {n_users}x{n_items} matrix")
    if not (np.isfinite(model.item_factors).all() and np.isfinite(model.user_factors).all()):
        raise RefitError("fit", "the fit produced non-finite factors")


def _record_failure(store: RedisStore, exc: RefitError, started: float) -> None:
    log.error("%s", exc)
    record = json.dumps({"status": "failed", "stage": exc.stage, "error": exc.detail, "at": time.time(),
                         "started_at": started})
    try:
        store.client.set(last_run_key(store), record)
        store.client.set(last_failure_key(store), record)
    except Exception as redis_exc:  # Redis may be the reason we failed
        log.error("could not record the failure in Redis: %s", redis_exc)
