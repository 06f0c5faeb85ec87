"""Operator actions on published versions: roll back to the previous one, report status."""

from __future__ import annotations

import json
from typing import Any

from batch import snapshot as snapshots
from batch.foldback import refold_users, users_since
from batch.refit import last_run_key
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import activate, current_version, list_versions, load_model, previous_version


class NoPreviousVersion(RuntimeError):
    """There is nothing to roll back to."""


def _offsets(meta: dict[str, Any]) -> dict[tuple[str, int], int]:
    out = {}
    for key, offset in meta.get("source_offsets", {}).items():
        topic, _, part = key.rpartition(":")
        out[(topic, int(part))] = int(offset)
    return out


def rollback(settings: Settings, store: RedisStore | None = None) -> dict[str, Any]:
    """Make the previous version current, then re-fold the users active since it was fitted.

    The previous version's user vectors stopped following new events when it was superseded; the
    users with events after its source offsets are folded in again from their histories against its
    item factors (the same step that follows a refit), so no update is lost by rolling back either.
    """
    store = store or RedisStore(settings)
    current = current_version(store)
    target = previous_version(store)
    if target is None:
        raise NoPreviousVersion("no previous model version to roll back to (it may have been removed after "
                                f"model_grace_s={settings.model_grace_s:g}s, or only one version was published)")
    model = load_model(store, target)
    if model is None:
        raise NoPreviousVersion(f"version {target} is incomplete or was removed")
    activate(store, target)
    recent = users_since(settings, _offsets(model.meta))
    fold = refold_users(settings, store, target, model.item_factors, model.gram, model.item_index, recent)
    return {"rolled_back_from": current, "current": target, **fold}


def status(settings: Settings, store: RedisStore | None = None) -> dict[str, Any]:
    """Current version and its metadata, every version with its activation time, the last run, the snapshot."""
    store = store or RedisStore(settings)
    current = current_version(store)
    meta = None
    if current is not None:
        raw = store.client.get(store.keys.model(current, "meta"))
        meta = json.loads(raw) if raw else None
    last = store.client.get(last_run_key(store))
    manifest_path = settings.snapshot_dir / snapshots.MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    return {
        "current": current,
        "meta": meta,
        "versions": [{"version": v, "activated_at": t,
                      "present": bool(store.client.exists(store.keys.model(v, "meta")))}
                     for v, t in list_versions(store)],
        "previous": previous_version(store),
        "last_run": json.loads(last) if last else None,
        "snapshot": None if manifest is None else {
            k: manifest[k] for k in ("events", "invalid", "n_users", "n_items", "n_entries", "written_at", "offsets")
        } | {"dir": str(settings.snapshot_dir)},
    }
