"""`streamrec migrate-layout`: move the user state in Redis to this version's key layout, in place.

Two moves need it (:mod:`streamrec.store.layout`): a Redis written before per-partition keys (format 1:
histories tagged by user id, one hash of every user's counts, profiles and vectors per version, one
offsets hash) and a Redis laid out for another partition count (after the event topics grew). Each user's
state moves under the hash tag of the partition murmur2 now gives the user (``STREAMREC_PARTITIONS``):
history lists with DUMP/RESTORE (so it works on a Redis Cluster too, where RENAME cannot cross slots),
counts, profiles and each version's vectors and stamps field by field; from format 1, the keys written for
all users (trending, co-visitation, new items) move to their kind's hash tag. The applied offsets stay with their
Kafka partition (``topic:p`` fields go to partition *p*'s hash); each de-duplication set is copied to every
partition with its expiry (an event id does not say whose it is). The layout is recorded last.

The workers must be stopped (the consumer group must have no members); the API keeps serving but misses
the users not moved yet. Moving is idempotent: a migration interrupted half-way is run again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from streamrec.settings import Settings
from streamrec.store import NEW_ITEM_PARTS, RedisStore, as_str
from streamrec.store.layout import FORMAT, Layout, read_layout, write_layout

Progress = Callable[[str], None]
PAGE = 1_000


class MigrateError(RuntimeError):
    """The migration cannot run; the message says why and what to do."""


def _say(msg: str) -> None:
    print(f"[migrate-layout] {msg}", file=sys.stderr, flush=True)


def _glob(text: str) -> str:
    """``text`` with glob characters escaped, for SCAN MATCH."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _scan(store: RedisStore, pattern: str) -> Iterator[str]:
    for key in store.client.scan_iter(match=pattern, count=PAGE):
        yield as_str(key)


def _hash_sources(store: RedisStore, found: Layout) -> dict[str, list[str]]:
    """What each per-user hash is called in the layout ``found``: kind -> the source keys."""
    k, p = store.keys, _glob(store.keys.prefix)
    if found.format == 1:
        sources = {"user_events": [f"{k.prefix}:user_events"], "profiles": [f"{k.prefix}:profiles"]}
        for part in ("users", "user_ts"):
            sources[part] = list(_scan(store, f"{p}:model:*[^}}]:{part}"))
        return sources
    parts = found.partitions or 1
    sources = {"user_events": [f"{k.prefix}:{{p{n}}}:user_events" for n in range(parts)],
               "profiles": [f"{k.prefix}:{{p{n}}}:profiles" for n in range(parts)]}
    for part in ("users", "user_ts"):
        sources[part] = list(_scan(store, f"{p}:model:*:{{p*}}:{part}"))
    return sources


def _target(store: RedisStore, kind: str, source: str, user: str) -> str:
    """The key of ``user``'s field of the hash ``source`` (a ``kind`` of :func:`_hash_sources`) now."""
    k, n = store.keys, store.keys.partition(user)
    if kind == "user_events":
        return k.user_events(n)
    if kind == "profiles":
        return k.profiles(n)
    version = source[len(f"{k.prefix}:model:"):].split(":", 1)[0]
    return k.user_vectors(version, n) if kind == "users" else k.user_ts(version, n)


def _move_hashes(store: RedisStore, found: Layout, progress: Progress) -> dict[str, int]:
    """Every field of the per-user hashes into its user's partition's hash; returns fields moved per kind."""
    moved: dict[str, int] = {}
    for kind, sources in _hash_sources(store, found).items():
        moved[kind] = 0
        for source in sources:
            page: dict[str, dict[Any, Any]] = {}
            size = 0
            for field, value in store.client.hscan_iter(source, count=PAGE):
                user = as_str(field)
                target = _target(store, kind, source, user)
                if target != source:
                    page.setdefault(target, {})[user] = value
                    size += 1
                if size >= PAGE:
                    moved[kind] += _flush(store, source, page)
                    page, size = {}, 0
            moved[kind] += _flush(store, source, page)
            if found.format == 1:
                store.client.unlink(source)
        progress(f"{kind}: {moved[kind]:,} fields moved")
    return moved


def _flush(store: RedisStore, source: str, page: dict[str, dict[Any, Any]]) -> int:
    """HSET the page's fields in their targets, then HDEL them from ``source``: a crash in between leaves a
    field in both, and the next run moves it again (same value)."""
    if not page:
        return 0
    pipe = store.client.pipeline(transaction=False)
    for target, values in page.items():
        pipe.hset(target, mapping=values)
    pipe.execute()
    names = [f for values in page.values() for f in values]
    store.client.hdel(source, *names)
    return len(names)


def _move_key(store: RedisStore, source: str, target: str) -> bool:
    """DUMP ``source``, RESTORE it as ``target`` with its expiry, unlink ``source``; False when it is gone."""
    dumped, ttl = store.client.dump(source), store.client.pttl(source)
    if dumped is None:
        return False
    store.client.restore(target, max(int(ttl), 0), dumped, replace=True)
    store.client.unlink(source)
    return True


def _move_histories(store: RedisStore, found: Layout, progress: Progress) -> int:
    k, p = store.keys, _glob(store.keys.prefix)
    moved = 0
    if found.format == 1:
        head = f"{k.prefix}:hist:{{"
        keys = ((key, key[len(head):-1]) for key in _scan(store, f"{p}:hist:{{*}}"))
    else:
        keys = ((key, key.split(":hist:", 1)[1]) for key in _scan(store, f"{p}:{{p*}}:hist:*"))
    for key, user in keys:
        target = k.history(user)
        if target != key and _move_key(store, key, target):
            moved += 1
            if moved % 50_000 == 0:
                progress(f"histories: {moved:,} moved")
    progress(f"histories: {moved:,} moved")
    return moved


def _tagged_part(part: str) -> Callable[[str], str]:
    """``<prefix>:model:<v>:<part>`` -> ``<prefix>:model:<v>:{n}:<part>``."""
    return lambda key: f"{key[: -len(part) - 1]}:{{n}}:{part}"


def _move_shared(store: RedisStore) -> int:
    """Format 1's keys written for all users (trending, popular, co-visitation, new items) to their kind's
    hash tag (:class:`streamrec.store.Keys`); the rest of each name is unchanged."""
    pre, p = store.keys.prefix, _glob(store.keys.prefix)
    renames: list[tuple[str, Callable[[str], str]]] = [
        (f"{p}:trend:*", lambda key: f"{pre}:{{t}}:{key[len(pre) + 1:]}"),
        (f"{p}:popular*", lambda key: f"{pre}:{{t}}:{key[len(pre) + 1:]}"),
        (f"{p}:covis:*", lambda key: f"{pre}:{{c}}:{key[len(pre) + 1:]}"),
        (f"{p}:model:*:pending:{{*}}", lambda key: key.replace(":pending:{", ":{n}:pending:")[:-1]),
    ]
    renames += [(f"{p}:model:*[^}}]:{part}", _tagged_part(part)) for part in NEW_ITEM_PARTS]
    moved = 0
    for pattern, rename in renames:
        for key in list(_scan(store, pattern)):
            moved += _move_key(store, key, rename(key))
    return moved


def _move_offsets(store: RedisStore, found: Layout) -> int:
    """Format 1's offsets hash per group into per-partition hashes (fields keep their ``topic:p``)."""
    if found.format != 1:
        return 0  # the offsets of Kafka partition p stay under p's tag whatever the count
    k, moved = store.keys, 0
    for key in list(_scan(store, f"{_glob(k.prefix)}:offsets:*")):
        if ":fence:" in key:
            store.client.unlink(key)  # fences only guard transactions in flight; the workers are stopped
            continue
        group = key[len(f"{k.prefix}:offsets:"):]
        for field, value in store.client.hgetall(key).items():
            name = as_str(field)
            store.client.hset(k.offsets(group, int(name.rsplit(":", 1)[1])), name, value)
            moved += 1
        store.client.unlink(key)
    return moved


def _copy_dedup(store: RedisStore, found: Layout) -> int:
    """Every de-duplication set into each partition's set of the same bucket, with its expiry."""
    k, p = store.keys, _glob(store.keys.prefix)
    pattern = f"{p}:dedup:*" if found.format == 1 else f"{p}:{{p*}}:dedup:*"
    copied = 0
    for key in list(_scan(store, pattern)):
        bucket = int(key.rsplit(":", 1)[1])
        members, ttl = store.client.smembers(key), int(store.client.ttl(key))
        for n in range(k.partitions):
            target = k.dedup(bucket, n)
            if target != key and members:
                store.client.sadd(target, *members)
                if ttl > 0:
                    store.client.expire(target, ttl)
                copied += 1
        if found.format == 1:
            store.client.unlink(key)
    return copied


def migrate(settings: Settings, progress: Progress = _say) -> dict[str, Any]:
    """Move the state to the layout of ``settings`` (see the module docstring); returns a summary."""
    from ops.rebuild import group_members

    started = time.monotonic()
    store = RedisStore(settings)
    try:
        if not store.ping():
            raise MigrateError(f"redis at {settings.redis_url.split('@')[-1]} does not answer")
        members = group_members(settings)
        if members:
            raise MigrateError(f"the worker group {settings.consumer_group!r} has {members} member(s): stop every "
                               "`streamrec worker` first (they would write while the state moves)")
        found = read_layout(store)
        summary: dict[str, Any] = {"from": None if found is None else {"format": found.format,
                                                                       "partitions": found.partitions},
                                   "to": {"format": FORMAT, "partitions": store.keys.partitions}}
        if found is not None and (found.format, found.partitions) != (FORMAT, store.keys.partitions):
            progress(f"moving from format {found.format} ({found.partitions or 'no'} partitions) to format "
                     f"{FORMAT} with {store.keys.partitions} partitions")
            summary["histories"] = _move_histories(store, found, progress)
            summary["fields"] = _move_hashes(store, found, progress)
            summary["offsets"] = _move_offsets(store, found)
            summary["shared_keys"] = _move_shared(store) if found.format == 1 else 0
            summary["dedup_sets"] = _copy_dedup(store, found)
        else:
            progress("the state already follows this layout" if found else "redis holds no user state")
        write_layout(store)
        summary["seconds"] = round(time.monotonic() - started, 2)
        return summary
    finally:
        store.close()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        summary = migrate(settings)
    except MigrateError as exc:
        print(f"streamrec: migrate-layout: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec migrate-layout`` to the CLI."""
    p = sub.add_parser(
        "migrate-layout", help="move the user state in Redis to per-partition keys (after an upgrade, or after "
        "the event topics got more partitions)",
        description="Moves every user's history, event count, profile and vectors under the hash tag of the "
        "user's Kafka partition (murmur2 of the user id among STREAMREC_PARTITIONS), keeps the applied offsets "
        "per partition and records the layout, so workers start on it. Stop the workers first; running it "
        "again is harmless. See docs/operations.md#key-layout.")
    p.set_defaults(func=cmd_migrate)
