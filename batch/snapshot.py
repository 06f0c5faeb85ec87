"""The local compacted snapshot: aggregated interactions plus the Kafka offsets they cover.

One entry per (user, item): the time-decayed number of events of each registry type (one column per
:class:`~models.event_types.EventType`, named in the manifest), the raw event count
and the newest event time. Events whose ``event_id`` was already counted are dropped (:func:`duplicates`):
within a run always, across runs while the first copy is within ``STREAMREC_DEDUP_WINDOW_S`` of event
time of the newest event (the snapshot keeps those ids), like the worker's window. Each batch run
reads only the events after :attr:`Snapshot.offsets`, merges them (:func:`merge`) and saves the result
atomically.

Time decay on aggregates: a decayed sum ``Σ 0.5^((ref - ts)/h)`` is stored relative to a reference
time ``ref_ms`` (the newest event seen). Moving the reference to ``ref'`` multiplies every sum by the
same factor ``0.5^((ref' - ref)/h)``, so old aggregates are rescaled in one multiplication and new
events are added with their own factor -- exactly the per-event weights, whatever the run
boundaries. The per-type sums are kept apart so the type weights can change between runs;
the half-life cannot (its sums would be wrong), so a snapshot made with another half-life is
rejected and must be rebuilt from the topics. A snapshot of an older format (2: separate click and
purchase sums) or of another set of types is :class:`SnapshotOutdated`: the refit discards it and
re-reads the topics from the beginning, it never reads its columns as something else.

Files (under ``settings.snapshot_dir``): ``manifest.json`` (offsets, reference time, counts, the
name of the data file) and ``snapshot-<stamp>.npz`` (arrays; ids as newline-joined UTF-8 -- ids
cannot hold control characters). The manifest is replaced last with ``os.replace``, so a reader
sees the old snapshot or the new one. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.event_types import TYPE_NAMES
from models.weighting import decay_factors

FORMAT = 3  # 3: per-type sums (n × types, the manifest's "types"); 2: clicks and purchases arrays
MANIFEST = "manifest.json"
TopicPartition = tuple[str, int]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]


class SnapshotError(RuntimeError):
    """The snapshot on disk cannot be used with these settings (clear message, never silently reset)."""


class SnapshotOutdated(SnapshotError):
    """The snapshot was written in another format or for other event types: rebuild it from the topics."""


@dataclass
class NewEvents:
    """Valid events read from Kafka, columnar. ``user_code``/``item_code`` index ``users``/``items``."""

    users: list[str]
    items: list[str]
    user_code: I32
    item_code: I32
    ts_ms: I64
    type_code: U8  # EventType.code of each event
    event_id: U64  # n × 2: each event's 16-byte id as two uint64 words

    def __len__(self) -> int:
        return len(self.ts_ms)

    def take(self, keep: npt.NDArray[np.bool_]) -> NewEvents:
        """The events where ``keep`` is true (id dictionaries unchanged)."""
        return NewEvents(self.users, self.items, self.user_code[keep], self.item_code[keep], self.ts_ms[keep],
                         self.type_code[keep], self.event_id[keep])


@dataclass
class Snapshot:
    """Aggregated interactions, one row per (user, item), sorted by (user, item)."""

    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    user_idx: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    item_idx: I32 = field(default_factory=lambda: np.zeros(0, np.int32))
    sums: F64 = field(default_factory=lambda: np.zeros((0, len(TYPE_NAMES)), np.float64))  # per type, decayed
    types: tuple[str, ...] = TYPE_NAMES  # the type of each column of ``sums``
    count: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    last_ts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    ref_ms: int = 0
    half_life_s: float | None = None
    events: int = 0  # valid events aggregated so far
    invalid: int = 0  # invalid events skipped so far
    duplicates: int = 0  # events dropped because their event_id was already counted
    # ids (n × 2 uint64) and event times of the events within the de-duplication window of ref_ms
    recent_ids: U64 = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    recent_ts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.user_idx)

    def weights(self, type_weights: Mapping[str, float], at_ms: int) -> F64:
        """Each entry's weight at time ``at_ms``: type weights times the decay from ``ref_ms`` to ``at_ms``."""
        w = self.sums @ np.array([type_weights[t] for t in self.types], dtype=np.float64)
        if self.half_life_s is not None and at_ms > self.ref_ms:
            w = w * float(decay_factors(np.array([self.ref_ms]), at_ms, self.half_life_s)[0])
        return w


def without_users(snap: Snapshot, users: set[str]) -> Snapshot:
    """The snapshot without any entry (or the id) of ``users``: erased users (``DELETE /v1/users/{id}``)."""
    keep_user = np.fromiter((u not in users for u in snap.users), dtype=np.bool_, count=len(snap.users))
    if keep_user.all():
        return snap
    rows = keep_user[snap.user_idx]
    remap = (np.cumsum(keep_user) - 1).astype(np.int32)  # monotone: the (user, item) order is kept
    return replace(snap, users=[u for u, k in zip(snap.users, keep_user.tolist(), strict=True) if k],
                   user_idx=remap[snap.user_idx[rows]], item_idx=snap.item_idx[rows], sums=snap.sums[rows],
                   count=snap.count[rows], last_ts=snap.last_ts[rows])


def duplicates(snap: Snapshot, new: NewEvents) -> npt.NDArray[np.bool_]:
    """Which of ``new`` repeat an ``event_id`` seen before: in the snapshot's window, or earlier in ``new``.

    The contract applies an event sent twice once (the worker de-duplicates in Redis); the refit must
    count it once too. ``new`` is in offset order per partition and one event always lands in its
    user's partition, so the first copy is the one kept.
    """
    if not len(new):
        return np.zeros(0, np.bool_)
    ids = np.concatenate([snap.recent_ids, new.event_id]) if len(snap.recent_ids) else new.event_id
    # One 64-bit mix per id finds the candidates fast (a uint64 hash table); only ids whose mix repeats are
    # then compared on all 128 bits, so a collision of the mix can never drop an event.
    mixed = pd.Series(ids[:, 0] ^ (ids[:, 1] * np.uint64(0x9E3779B97F4A7C15)), copy=False)
    seen = np.zeros(len(ids), np.bool_)
    candidates = np.flatnonzero(mixed.duplicated(keep=False).to_numpy())
    if len(candidates):
        sub = ids[candidates]
        exact = pd.DataFrame({"hi": sub[:, 0], "lo": sub[:, 1]}).duplicated(keep="first").to_numpy()
        seen[candidates[exact]] = True  # candidates keep their order, so "first" is the earliest copy
    return seen[len(snap.recent_ids):]


def merge(snap: Snapshot, new: NewEvents, offsets: dict[TopicPartition, int], *, invalid: int = 0,
          dedup_window_ms: int = 3_600_000) -> Snapshot:
    """``snap`` plus ``new``: repeated event ids dropped, ids unioned, per-(user, item) sums combined, offsets
    advanced to ``offsets``. Ids of events within ``dedup_window_ms`` (event time) of the newest are kept for
    the next run's :func:`duplicates` check."""
    dup = duplicates(snap, new)
    n_dup = int(dup.sum())
    if n_dup:
        new = new.take(~dup)
    users, user_map = _union(snap.users, new.users)
    items, item_map = _union(snap.items, new.items)
    ref = snap.ref_ms
    if len(new):
        ref = max(ref, int(new.ts_ms.max()))
    hl = snap.half_life_s
    old_scale = float(decay_factors(np.array([snap.ref_ms]), ref, hl)[0]) if len(snap) else 1.0
    new_decay = decay_factors(new.ts_ms, ref, hl)
    u = np.concatenate([snap.user_idx.astype(np.int64), user_map[new.user_code]])
    i = np.concatenate([snap.item_idx.astype(np.int64), item_map[new.item_code]])
    fresh = np.zeros((len(new), len(snap.types)), np.float64)
    fresh[np.arange(len(new)), new.type_code] = new_decay
    sums = np.concatenate([snap.sums * old_scale, fresh])
    count = np.concatenate([snap.count, np.ones(len(new), np.int64)])
    last = np.concatenate([snap.last_ts, new.ts_ms.astype(np.int64)])

    key = u * max(len(items), 1) + i
    order = np.argsort(key)  # the order among equal keys does not matter for sums and maxima
    key = key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
    first = order[starts]

    def reduce(values: npt.NDArray[Any], op: np.ufunc) -> npt.NDArray[Any]:
        return op.reduceat(values[order], starts) if len(starts) else values[:0]

    merged_offsets = dict(snap.offsets)
    merged_offsets.update(offsets)
    return Snapshot(
        users=users, items=items,
        user_idx=u[first].astype(np.int32), item_idx=i[first].astype(np.int32),
        sums=reduce(sums, np.add), types=snap.types,
        count=reduce(count, np.add), last_ts=reduce(last, np.maximum),
        offsets=merged_offsets, ref_ms=ref, half_life_s=hl,
        events=snap.events + len(new), invalid=snap.invalid + invalid, duplicates=snap.duplicates + n_dup,
        **_recent(snap, new, ref - dedup_window_ms),
    )


def _recent(snap: Snapshot, new: NewEvents, since_ms: int) -> dict[str, Any]:
    """The ids and times of the events (old and new) at or after ``since_ms``."""
    old, fresh = snap.recent_ts >= since_ms, new.ts_ms >= since_ms  # masks first: no copy of every id
    return {"recent_ids": np.concatenate([snap.recent_ids[old], new.event_id[fresh]]),
            "recent_ts": np.concatenate([snap.recent_ts[old], new.ts_ms[fresh].astype(np.int64)])}


def _union(known: list[str], incoming: list[str]) -> tuple[list[str], I64]:
    """Append the ids of ``incoming`` not in ``known``; return the ids and each incoming id's index."""
    if not known:
        return list(incoming), np.arange(len(incoming), dtype=np.int64)
    pos = pd.Index(known).get_indexer(incoming).astype(np.int64)
    missing = np.flatnonzero(pos < 0)
    pos[missing] = len(known) + np.arange(len(missing))
    return known + [incoming[j] for j in missing.tolist()], pos


# --------------------------------------------------------------------------------------------- files
def _join_ids(ids: list[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("\n".join(ids).encode(), dtype=np.uint8)


def _split_ids(blob: npt.NDArray[np.uint8], n: int) -> list[str]:
    ids = blob.tobytes().decode().split("\n") if n else []
    if len(ids) != n:
        raise SnapshotError(f"snapshot id list is corrupt: expected {n} ids, found {len(ids)}")
    return ids


def load(directory: Path, topics: list[str], half_life_s: float | None) -> Snapshot:
    """The snapshot in ``directory``, or an empty one (covering nothing) when there is none yet."""
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        return Snapshot(half_life_s=half_life_s)
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise SnapshotError(f"{manifest_path} is not valid JSON ({exc}); rebuild with --rebuild") from None
    if manifest.get("format") != FORMAT or tuple(manifest.get("types", ())) != TYPE_NAMES:
        raise SnapshotOutdated(f"{manifest_path} has format {manifest.get('format')} over event types "
                               f"{manifest.get('types', ['click', 'purchase'])}, this version writes format "
                               f"{FORMAT} over {list(TYPE_NAMES)}: rebuild it from the topics")
    if sorted(manifest["topics"]) != sorted(topics):
        raise SnapshotError(f"the snapshot in {directory} covers topics {manifest['topics']} but the settings "
                            f"read {topics}: point STREAMREC_BATCH_SNAPSHOT_DIR elsewhere or rebuild")
    if manifest["half_life_s"] != half_life_s:
        raise SnapshotError(f"the snapshot in {directory} was made with half-life {manifest['half_life_s']} s, "
                            f"the settings say {half_life_s} s: rebuild it (streamrec batch run --rebuild)")
    with np.load(directory / manifest["data"], allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return Snapshot(
        users=_split_ids(arrays["users"], int(manifest["n_users"])),
        items=_split_ids(arrays["items"], int(manifest["n_items"])),
        user_idx=arrays["user_idx"], item_idx=arrays["item_idx"],
        sums=arrays["sums"].reshape(-1, len(TYPE_NAMES)), count=arrays["count"], last_ts=arrays["last_ts"],
        offsets={(t, int(p)): int(o) for t, p, o in manifest["offsets"]},
        ref_ms=int(manifest["ref_ms"]), half_life_s=manifest["half_life_s"],
        events=int(manifest["events"]), invalid=int(manifest["invalid"]),
        duplicates=int(manifest.get("duplicates", 0)),
        recent_ids=arrays["recent_ids"].reshape(-1, 2), recent_ts=arrays["recent_ts"],
    )


def save(snap: Snapshot, directory: Path, topics: list[str]) -> Path:
    """Write ``snap`` atomically (data file first, then the manifest via ``os.replace``); returns the manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns():x}"
    data_name = f"snapshot-{stamp}.npz"
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", suffix=".npz", delete=False) as tmp:
        np.savez(tmp, users=_join_ids(snap.users), items=_join_ids(snap.items), user_idx=snap.user_idx,
                 item_idx=snap.item_idx, sums=snap.sums, count=snap.count,
                 last_ts=snap.last_ts, recent_ids=snap.recent_ids, recent_ts=snap.recent_ts)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, directory / data_name)
    manifest = {
        "format": FORMAT, "types": list(snap.types), "data": data_name, "topics": sorted(topics),
        "written_at": time.time(),
        "offsets": sorted([t, p, o] for (t, p), o in snap.offsets.items()),
        "ref_ms": snap.ref_ms, "half_life_s": snap.half_life_s, "events": snap.events, "invalid": snap.invalid,
        "duplicates": snap.duplicates,
        "n_users": len(snap.users), "n_items": len(snap.items), "n_entries": len(snap),
    }
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".tmp-", suffix=".json", delete=False) as text:
        json.dump(manifest, text)
        text.flush()
        os.fsync(text.fileno())
    os.replace(text.name, directory / MANIFEST)
    for old in directory.glob("snapshot-*.npz"):  # superseded data files
        if old.name != data_name:
            old.unlink(missing_ok=True)
    return directory / MANIFEST


def discard(directory: Path) -> None:
    """Remove the snapshot so the next run reads the topics from the beginning."""
    (directory / MANIFEST).unlink(missing_ok=True)
    for old in directory.glob("snapshot-*.npz"):
        old.unlink(missing_ok=True)
