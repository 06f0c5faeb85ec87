"""Read a range of the event topics fast, with forked readers when there is enough to read.

Reading 1.5 M events must cost a fraction of the fit. :mod:`batch.consume` keeps the per-event work of
one reader small; with more than one core and enough events, the partitions are split between this
process and forked reader processes that send back plain arrays over a pipe (raw bytes and a JSON
header; nothing is pickled), and the id dictionaries are merged here.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from batch.consume import TP, Part, Progress, Work, read_partitions, watermarks
from batch.snapshot import NewEvents
from streamrec.kafka_io import KafkaUnavailable
from streamrec.settings import Settings

__all__ = ["PARALLEL_MIN_EVENTS", "Progress", "ReadStats", "read_events"]
PARALLEL_MIN_EVENTS = 200_000  # below this a forked reader costs more than it saves
# event_id: the 16-byte ids as flat uint64 words, two per event
_ARRAYS = (("user_code", np.int32), ("item_code", np.int32), ("ts", np.int64), ("type_code", np.uint8),
           ("event_id", np.uint64))


@dataclass
class ReadStats:
    """What a read saw: events read, valid, invalid by reason, and events lost to topic retention."""

    read: int = 0
    valid: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    lost_to_retention: int = 0
    seconds: float = 0.0
    processes: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "valid": self.valid, "invalid": dict(self.invalid),
                "lost_to_retention": self.lost_to_retention, "read_s": round(self.seconds, 3),
                "read_processes": self.processes}


def _send(conn: Connection, part: Part) -> None:
    header = {"users": len(part.users), "items": len(part.items), "invalid": dict(part.invalid), "read": part.read}
    conn.send_bytes(json.dumps(header).encode())
    conn.send_bytes("\n".join(part.users).encode())  # ids hold no control characters: newlines separate them
    conn.send_bytes("\n".join(part.items).encode())
    for name, _ in _ARRAYS:
        conn.send_bytes(np.ascontiguousarray(part.arrays[name]).tobytes())


def _recv(conn: Connection) -> Part:
    header = json.loads(conn.recv_bytes())
    if "error" in header:
        raise KafkaUnavailable(f"reader process failed: {header['error']}")
    users_blob, items_blob = conn.recv_bytes(), conn.recv_bytes()
    users = users_blob.decode().split("\n") if header["users"] else []
    items = items_blob.decode().split("\n") if header["items"] else []
    arrays = {name: np.frombuffer(conn.recv_bytes(), dtype=dtype) for name, dtype in _ARRAYS}
    return Part(users, items, arrays, Counter(header["invalid"]), header["read"])


def _child(conn: Connection, settings: Settings, work: Work) -> None:
    try:
        _send(conn, read_partitions(settings, work, None))
    except Exception as exc:  # reported to the parent, which raises it
        conn.send_bytes(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
    finally:
        conn.close()


def _split(work: Work, n: int) -> list[Work]:
    """Greedy balance of partitions by message count over ``n`` readers."""
    groups: list[Work] = [[] for _ in range(n)]
    load = [0] * n
    for w in sorted(work, key=lambda w: w[3] - w[2], reverse=True):
        k = load.index(min(load))
        groups[k].append(w)
        load[k] += w[3] - w[2]
    return [g for g in groups if g]


def _combine(ids: list[list[str]], codes: list[npt.NDArray[np.int32]]) -> tuple[list[str], npt.NDArray[np.int32]]:
    """Merge per-reader id dictionaries into one and remap each reader's codes."""
    if len(ids) == 1:
        return ids[0], codes[0]
    merged_codes, merged = pd.factorize(np.array([i for part in ids for i in part], dtype=object))
    out, start = [], 0
    for part, code in zip(ids, codes, strict=True):
        out.append(merged_codes[start : start + len(part)][code])
        start += len(part)
    return list(merged), np.concatenate(out).astype(np.int32)


def read_events(
    settings: Settings, start: dict[TP, int], topics: list[str], *, processes: int = 1,
    progress: Progress | None = None, parallel_min_events: int = PARALLEL_MIN_EVENTS,
) -> tuple[NewEvents, dict[TP, int], ReadStats]:
    """Every valid event after ``start`` up to the current end offsets of ``topics``.

    Returns the events, the end offsets they cover (the next run starts there) and read statistics.
    Events already removed by retention are counted in ``lost_to_retention`` (see docs/batch.md).
    """
    t0 = time.perf_counter()
    marks = watermarks(settings, topics)
    stats = ReadStats()
    end = {tp: high for tp, (_, high) in marks.items()}
    work = []
    for tp, (low, high) in marks.items():
        lo = max(start.get(tp, 0), low)
        if start.get(tp, 0) > high:
            raise KafkaUnavailable(f"{tp[0]}[{tp[1]}] ends at offset {high} but the snapshot covers up to "
                                   f"{start[tp]}: the topic was recreated; rebuild the snapshot (--rebuild)")
        stats.lost_to_retention += max(0, min(low, high) - start.get(tp, 0))
        if high > lo:
            work.append((tp[0], tp[1], lo, high))
    total = sum(hi - lo for _, _, lo, hi in work)
    n = max(1, min(processes, os.cpu_count() or 1, len(work)))
    if total < parallel_min_events or "fork" not in mp.get_all_start_methods():
        n = 1
    groups = _split(work, n) if work else [[]]
    stats.processes = len(groups)
    if progress:
        progress(f"reading {total:,} new events from {len(work)} partitions with {len(groups)} process(es)")
    ctx = mp.get_context("fork") if len(groups) > 1 else None
    children = []
    for group in groups[1:]:
        assert ctx is not None
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send_end, settings, group), daemon=True)
        proc.start()
        send_end.close()
        children.append((proc, recv_end))
    try:
        parts = [read_partitions(settings, groups[0], progress)] if groups[0] else []
        for _, conn in children:
            parts.append(_recv(conn))
    finally:
        for proc, conn in children:
            conn.close()
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    if not parts:
        empty = np.zeros(0, np.int32)
        return (NewEvents([], [], empty, empty, np.zeros(0, np.int64), np.zeros(0, np.uint8),
                          np.zeros((0, 2), np.uint64)), end, _finish(stats, t0))
    users, user_code = _combine([p.users for p in parts], [p.arrays["user_code"] for p in parts])
    items, item_code = _combine([p.items for p in parts], [p.arrays["item_code"] for p in parts])
    for p in parts:
        stats.read += p.read
        stats.invalid.update(p.invalid)
    events = NewEvents(users, items, user_code, item_code, np.concatenate([p.arrays["ts"] for p in parts]),
                       np.concatenate([p.arrays["type_code"] for p in parts]),
                       np.concatenate([p.arrays["event_id"] for p in parts]).reshape(-1, 2))
    stats.valid = len(events)
    return events, end, _finish(stats, t0)


def _finish(stats: ReadStats, t0: float) -> ReadStats:
    stats.seconds = time.perf_counter() - t0
    return stats
