"""Which key layout a Redis holds, so no process reads or writes user state under the wrong keys.

``<prefix>:layout`` records the layout (``{"format": 2, "partitions": N}``): format 2 keeps every user's
state under the hash tag of the user's Kafka partition among ``N`` (:class:`streamrec.store.Keys`).
The worker calls :func:`ensure_layout` before consuming: it writes the record on a Redis that holds no
user state yet, and refuses to start on a Redis whose state follows another layout -- format 1 (one
hash of all users' vectors per version, histories tagged by user id: before issue 17) or another
partition count -- with the command that moves the state (``streamrec migrate-layout``, docs/operations.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streamrec.store import RedisStore, as_str

FORMAT = 2
"""The layout this code reads and writes."""


class LayoutMismatch(RuntimeError):
    """The state in Redis follows another layout than this process's settings."""


@dataclass(frozen=True)
class Layout:
    """A recorded layout: ``format`` 1 is the unrecorded layout before per-partition keys."""

    format: int
    partitions: int | None


def legacy_keys(store: RedisStore) -> list[str]:
    """Keys of format 1 that hold state (empty when there are none)."""
    p = store.keys.prefix
    found = [key for key in (f"{p}:user_events", f"{p}:profiles") if store.client.exists(key)]
    # ``[^}]``: a format-2 vector hash ends ``:{p<n>}:users``
    for pattern in (f"{p}:offsets:*", f"{p}:model:*[^}}]:users", f"{p}:hist:{{*"):
        found.extend(as_str(k) for k in store.client.scan_iter(match=pattern, count=1_000))
        if found:
            break
    return found


def read_layout(store: RedisStore) -> Layout | None:
    """The recorded layout; format 1 when none is recorded but format-1 state exists; None on an empty Redis."""
    raw = store.client.get(store.keys.layout)
    if raw is not None:
        doc = json.loads(raw)
        return Layout(int(doc["format"]), int(doc["partitions"]))
    return Layout(1, None) if legacy_keys(store) else None


def write_layout(store: RedisStore) -> None:
    """Record that the state follows this process's layout (format 2, its partition count)."""
    store.client.set(store.keys.layout, json.dumps({"format": FORMAT, "partitions": store.keys.partitions}))


def ensure_layout(store: RedisStore) -> Layout:
    """The layout of the state, recorded now on an empty Redis; raises :class:`LayoutMismatch` when the
    state follows another one."""
    found = read_layout(store)
    want = Layout(FORMAT, store.keys.partitions)
    if found is None:
        write_layout(store)
        return want
    if found.format != FORMAT:
        raise LayoutMismatch(
            f"redis holds user state in key layout format {found.format} (before per-partition keys), this "
            f"version reads format {FORMAT}: stop the workers and run `streamrec migrate-layout` once "
            "(docs/operations.md#key-layout)")
    if found.partitions != want.partitions:
        raise LayoutMismatch(
            f"the user state in redis is laid out for {found.partitions} partitions but STREAMREC_PARTITIONS is "
            f"{want.partitions}: set it to the event topics' partition count, and after adding partitions "
            "stop the workers and run `streamrec migrate-layout` (docs/operations.md#key-layout)")
    return found
