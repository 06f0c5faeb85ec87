"""`streamrec rebuild`: restore what Redis lost from the event log (Kafka) and the batch snapshot.

Redis holds only state derived from the event topics, plus the catalogue. When it loses its data (a
FLUSHALL, a lost volume, a restore from a backup too old to use), the rebuild recomputes it:

1. **Model.** If no complete current version is left, run the batch refit
   (:func:`batch.refit.run_refit`): the local snapshot covers the events up to its offsets, the refit
   reads the rest from Kafka, fits and publishes a new version atomically (a new version name; the
   lost one cannot be recovered, the refit is its equivalent on the same events).
2. **User state.** Replay every record of both event topics, from the log start up to the end offsets
   taken at the start, through the streaming worker's own core (:class:`BatchProcessor`), without
   Kafka consumer groups: histories (capped), event counts, trending and popular counts, de-duplication
   marks, new items, each user's vector folded against the current version, and the applied offset
   per partition, all written by the same MULTI/EXEC transactions the worker uses. The result is the
   state the worker would have built, and the applied offsets make a restarted worker continue exactly
   once: it resumes at its Kafka committed offset and skips everything at or below them. Invalid records
   are counted, not dead-lettered a second time.
3. **Catalogue** (``PUT /v1/items``) is not in Kafka: pass ``--catalog FILE`` (JSON lines or a JSON array
   of ``{"item_id", "category", "available", ...}``) to restore it, or have its owner send it again.

The workers must be stopped (the consumer group must have no members) so nothing writes while the
replay runs; the API may keep serving. Without ``--force`` the rebuild refuses when Redis still holds
applied offsets (the user state is there); with it, the user state is wiped first and recomputed.
See docs/reliability.md and docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.store import RedisStore

Progress = Callable[[str], None]
SCAN_COUNT = 1_000


class RebuildError(RuntimeError):
    """The rebuild cannot run or failed; the message says why and what to do."""


def _say(msg: str) -> None:
    print(f"[rebuild] {msg}", file=sys.stderr, flush=True)


def user_state_patterns(settings: Settings) -> list[str]:
    """Key patterns of the state derived from the event topics (what ``--force`` wipes)."""
    p, g = settings.redis_prefix, settings.consumer_group
    # the per-partition keys (``<prefix>:{p<n>}:...``, streamrec.store.Keys); profiles are not derived state
    return [f"{p}:{{p*}}:hist:*", f"{p}:{{p*}}:user_events", f"{p}:{{p*}}:offsets:{g}", f"{p}:{{p*}}:fence:{g}",
            f"{p}:{{p*}}:dedup:*", f"{p}:{{t}}:trend:*", f"{p}:{{t}}:popular", f"{p}:{{t}}:popular:c:*",
            f"{p}:model:*:{{n}}:new_items", f"{p}:model:*:{{n}}:pending_n", f"{p}:model:*:{{n}}:pending:*"]


def wipe_user_state(settings: Settings, store: Any) -> int:
    """Delete every key of :func:`user_state_patterns`; returns how many were deleted."""
    deleted = 0
    for pattern in user_state_patterns(settings):
        batch: list[bytes] = []
        for key in store.client.scan_iter(match=pattern, count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(store.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(store.client.unlink(*batch))
    return deleted


def group_members(settings: Settings) -> int:
    """Members of the worker's consumer group (0 when the group is empty or unknown)."""
    from ops.lag import LagError, describe_group
    from streamrec.kafka_io import admin_client

    try:
        _, members = describe_group(admin_client(settings), settings.consumer_group, 10.0)
    except LagError:
        return 0
    return members


def log_start_offsets(settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The first offset still in each partition (above 0 once retention removed events)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "streamrec-rebuild-probe",
                         "enable.auto.commit": False, "log_level": 0})
    try:
        return {tp: int(consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)[0]) for tp in tps}
    finally:
        consumer.close()


def read_catalog(path: Path) -> list[dict[str, Any]]:
    """Catalogue entries from JSON lines or a JSON array."""
    text = path.read_text()
    stripped = text.lstrip()
    rows = json.loads(text) if stripped.startswith("[") else [json.loads(line) for line in text.splitlines()
                                                              if line.strip()]
    for row in rows:
        if not isinstance(row, dict) or not row.get("item_id"):
            raise RebuildError(f"{path}: every catalogue entry needs an item_id")
    return rows


def _chunks(records: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rebuild(settings: Settings, *, force: bool = False, refit: bool = False, catalog: Path | None = None,
            progress: Progress = _say) -> dict[str, Any]:
    """Restore the model and every user's state (see the module docstring); returns a summary."""
    from streamrec.store import RedisStore

    started = time.monotonic()
    store = RedisStore(settings)
    summary: dict[str, Any] = {}
    try:
        end = _check_preconditions(settings, store, force, summary, progress)
        version = _restore_model(settings, store, refit, summary, progress)  # 1. the model
        counts = _replay_user_state(settings, store, end, summary, progress)  # 2. the user state
        if catalog is not None:  # 3. the catalogue, when given
            from streamrec.store.catalog import put_items

            rows = read_catalog(catalog)
            put_items(store, rows)
            summary["catalog_items"] = len(rows)
        summary["seconds"] = round(time.monotonic() - started, 2)
        progress(f"done in {summary['seconds']:.1f}s: model {version}, {counts['applied']:,} events applied for "
                 f"{summary['replay']['users']:,} users; start the workers again")
        return summary
    finally:
        store.close()


def _check_preconditions(settings: Settings, store: RedisStore, force: bool, summary: dict[str, Any],
                         progress: Progress) -> dict[tuple[str, int], int]:
    """Redis and Kafka answer, no worker runs, and the user state is gone (or ``force`` wipes it); returns
    the topics' end offsets, up to which the state is replayed."""
    from streamrec.kafka_io import KafkaUnavailable, end_offsets
    from streamrec.store.layout import LayoutMismatch, ensure_layout

    if not store.ping():
        raise RebuildError(f"redis at {settings.redis_url.split('@')[-1]} does not answer")
    try:
        end = end_offsets(settings, settings.event_topics)
        members = group_members(settings)
    except KafkaUnavailable as exc:
        raise RebuildError(f"kafka does not answer: {exc}") from None
    if members:
        raise RebuildError(f"the worker group {settings.consumer_group!r} has {members} member(s): stop every "
                           "`streamrec worker` first (they would write while the state is replayed)")
    held = [store.keys.offsets(settings.consumer_group, p) for p in range(store.keys.partitions)]
    applied_key = next((key for key in held if store.client.hlen(key)), None)
    if applied_key is not None:
        if not force:
            raise RebuildError(f"redis still holds applied offsets ({applied_key}): the user state is there. "
                               "Use --force to wipe it and recompute it from the topics")
        summary["wiped_keys"] = wipe_user_state(settings, store)
        progress(f"wiped {summary['wiped_keys']} keys of user state")
    try:  # the replay writes this version's layout: refuse a Redis whose remaining state follows another
        ensure_layout(store)
    except LayoutMismatch as exc:
        raise RebuildError(str(exc)) from None
    return end


def _restore_model(settings: Settings, store: RedisStore, refit: bool, summary: dict[str, Any],
                   progress: Progress) -> str:
    """The current model version, refitted from the snapshot and the topics when missing (or ``refit``)."""
    from batch.refit import RefitError, run_refit
    from streamrec.store.models import current_version, load_model

    version = current_version(store)
    if refit or version is None or load_model(store, version) is None:
        progress(f"{'refit requested' if refit else 'no complete model version in redis'}: running the batch "
                 f"refit from the snapshot in {settings.snapshot_dir} and the topics")
        try:
            fit = run_refit(settings, store, progress=progress)
        except RefitError as exc:
            raise RebuildError(f"{exc}") from None
        summary["refit"] = {k: fit.get(k) for k in ("version", "read", "n_users", "n_items", "n_interactions",
                                                    "total_s")}
        version = str(fit["version"])
    summary["model_version"] = version
    return version


def _replay_user_state(settings: Settings, store: RedisStore, end: dict[tuple[str, int], int],
                       summary: dict[str, Any], progress: Progress) -> dict[str, int]:
    """Every record up to ``end`` through the worker's own core (exactly once, as the worker applies it)."""
    from stream_processors.processor import BatchProcessor
    from streamrec.kafka_io import read_range
    from streamrec.store.users import total_event_counts

    tps = sorted(tp for tp, hi in end.items() if hi > 0)
    starts = log_start_offsets(settings, tps)
    missing = {f"{t}:{p}": off for (t, p), off in starts.items() if off > 0}
    if missing:
        progress(f"warning: retention removed the first events of {missing}: histories miss them")
    total = sum(end[tp] - starts[tp] for tp in tps)
    progress(f"replaying {total:,} records of {settings.event_topics} (up to the end offsets taken now)")
    processor = BatchProcessor(settings, store, dead_letters=None)  # dead letters were sent the first time
    counts = {"records": 0, "applied": 0, "duplicates": 0, "redelivered": 0, "dead_letters": 0}
    last = replay_started = time.monotonic()
    size = max(settings.worker_batch_size, 1_000)
    for chunk in _chunks(read_range(settings, {}, {tp: end[tp] for tp in tps}, timeout=60.0), size):
        result = processor.process(chunk)
        for name in ("records", "applied", "duplicates", "redelivered"):
            counts[name] += getattr(result, name)
        counts["dead_letters"] += sum(result.dead_letters.values())
        if time.monotonic() - last >= 10.0:
            last = time.monotonic()
            progress(f"replayed {counts['records']:,}/{total:,} records "
                     f"({counts['records'] / (last - replay_started):,.0f}/s)")
    summary["replay"] = {**counts, "seconds": round(time.monotonic() - replay_started, 2),
                         "users": total_event_counts(store)[0]}
    summary["applied_offsets"] = {f"{t}:{p}": end[(t, p)] - 1 for t, p in tps}
    if missing:
        summary["log_start_offsets"] = missing
    return counts


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = rebuild(settings, force=args.force, refit=args.refit, catalog=args.catalog)
    except RebuildError as exc:
        print(f"streamrec: rebuild: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec rebuild`` to the CLI."""
    p = sub.add_parser(
        "rebuild", help="restore Redis after data loss: the model from the snapshot and Kafka, user state by "
        "replaying the event topics",
        description="Restores what Redis lost from the event log and the batch snapshot: runs the batch refit "
        "when no model version is left, then replays both event topics through the worker's core (histories, "
        "counts, trending, vectors, de-duplication, applied offsets) so restarted workers continue exactly "
        "once. Stop the workers first. See docs/reliability.md.")
    p.add_argument("--force", action="store_true",
                   help="wipe the user state still in Redis and recompute it (default: refuse when it is there)")
    p.add_argument("--refit", action="store_true", help="refit the model even when a version is still current")
    p.add_argument("--catalog", type=Path, default=None,
                   help="catalogue to restore: JSON lines or a JSON array of {item_id, category, available, ...}")
    p.set_defaults(func=cmd_rebuild)
