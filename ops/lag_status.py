"""Group status from a window of commit observations, the way Burrow evaluates consumers.

Every measurement of a group (each ``streamrec lag`` run, each ``--watch`` refresh, each poll of the
exporter) is an *observation* per partition: (time, committed offset, lag). A window of the last
``settings.lag_window`` observations per partition is kept in Redis (``<prefix>:lag:<group>``), or in a
local state file when Redis does not answer, so consecutive runs and every process share it.

The rules, per partition, over the window (oldest first; the newest is the current measurement):

1. **OK** if the lag is 0 in any observation of the window (Burrow's rule 1: a consumer that caught up
   at any point in the window is keeping up).
2. **STALLED** if the committed offset is the same in every observation and the window spans at least
   ``settings.lag_stall_s`` seconds: there is a backlog and nothing is being committed (Burrow's
   "stopped" and "stalled" rules; we poll committed offsets rather than read every commit, so the two
   cannot be told apart and are one status).
3. **LAGGING** if the lag never decreases from one observation to the next (Burrow's "warning": the
   consumer moves, but slower than the producers). A single observation with a backlog is LAGGING.
4. **OK** otherwise: the lag went down somewhere in the window, the consumer is catching up.

An observation is stored only when it comes at least ``lag_stall_s / (lag_window - 1)`` seconds after the
newest stored one (closer ones are judged together with the stored window, then dropped), so a full
window covers ``lag_stall_s`` however often one polls. A committed offset that goes *backwards* (an
operator reset the group to replay) starts a new window, and observations older than ``10 × lag_stall_s``
are forgotten. A group's status is the worst of its partitions' (STALLED > LAGGING > OK).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Protocol

import redis

from ops.lag import TP, GroupLag
from streamrec.settings import Settings
from streamrec.store import RedisStore

OK, LAGGING, STALLED = "OK", "LAGGING", "STALLED"
SEVERITY = {OK: 0, LAGGING: 1, STALLED: 2}


@dataclass(frozen=True)
class Observation:
    """One measurement of one partition: epoch ms, committed offset (-1 when none) and lag."""

    ts_ms: int
    offset: int
    lag: int


@dataclass(frozen=True)
class Rules:
    """The window's size and the stall time, from settings."""

    window: int
    stall_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(settings.lag_window, settings.lag_stall_s)

    @property
    def spacing_ms(self) -> float:
        """Least time between stored observations, so a full window spans ``stall_s``."""
        return self.stall_s * 1000 / (self.window - 1)

    @property
    def max_age_ms(self) -> float:
        return 10 * self.stall_s * 1000


def advance(stored: Sequence[Observation], obs: Observation, rules: Rules) -> tuple[list[Observation],
                                                                                    list[Observation]]:
    """(the window to evaluate, the window to store) after observing ``obs``."""
    kept = [o for o in stored if 0 <= obs.ts_ms - o.ts_ms <= rules.max_age_ms]
    if kept and obs.offset < kept[-1].offset:
        kept = []  # the group was rewound to replay: its history no longer describes it
    if kept and obs.ts_ms - kept[-1].ts_ms < rules.spacing_ms:
        # Too close to the newest stored one to be kept, but it is the current state: judge the stored
        # window plus it, so polling faster than the spacing never shortens what is judged.
        kept = kept[-rules.window:]
        return [*kept, obs], kept
    stored = [*kept, obs][-rules.window:]
    return stored, stored


def partition_status(window: Sequence[Observation], rules: Rules) -> str:
    """The status of one partition over ``window`` (oldest first, non-empty); see the module doc."""
    newest = window[-1]
    if any(o.lag == 0 for o in window):
        return OK
    if all(o.offset == newest.offset for o in window) and newest.ts_ms - window[0].ts_ms >= rules.stall_s * 1000:
        return STALLED
    if all(b.lag >= a.lag for a, b in pairwise(window)):
        return LAGGING
    return OK


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default=OK)


# ------------------------------------------------------------------------------------------ history
class History(Protocol):
    """Where the windows live between measurements."""

    where: str

    def load(self, group: str) -> dict[TP, list[Observation]]: ...

    def save(self, group: str, windows: dict[TP, list[Observation]], ttl_s: float) -> None: ...


def _field(tp: TP) -> str:
    return f"{tp[0]}:{tp[1]}"  # topic names never contain ':'


def _parse(field: str | bytes, raw: str | bytes) -> tuple[TP, list[Observation]]:
    topic, _, part = (field.decode() if isinstance(field, bytes) else field).rpartition(":")
    return (topic, int(part)), [Observation(int(t), int(o), int(lag)) for t, o, lag in json.loads(raw)]


def _dump(window: list[Observation]) -> str:
    return json.dumps([[o.ts_ms, o.offset, o.lag] for o in window])


class RedisHistory:
    """Windows in a Redis hash per group, ``<prefix>:lag:<group>``, field ``topic:partition``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.where = f"redis {store.keys.prefix}:lag:*"

    def key(self, group: str) -> str:
        return self.store.keys.lag_window(group)

    def load(self, group: str) -> dict[TP, list[Observation]]:
        raw = self.store.client.hgetall(self.key(group))
        return dict(_parse(f, v) for f, v in raw.items())

    def save(self, group: str, windows: dict[TP, list[Observation]], ttl_s: float) -> None:
        if not windows:
            return
        pipe = self.store.client.pipeline()
        pipe.hset(self.key(group), mapping={_field(tp): _dump(w) for tp, w in windows.items()})
        pipe.expire(self.key(group), max(1, int(ttl_s)))
        pipe.execute()


class FileHistory:
    """Windows in a local JSON file, for when Redis does not answer (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = f"file {path}"

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self, group: str) -> dict[TP, list[Observation]]:
        try:
            return dict(_parse(f, v) for f, v in self._read().get(group, {}).items())
        except (ValueError, TypeError):
            return {}  # a damaged state file only costs the window

    def save(self, group: str, windows: dict[TP, list[Observation]], ttl_s: float) -> None:
        data = self._read()
        data.setdefault(group, {}).update({_field(tp): _dump(w) for tp, w in windows.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


class SharedHistory:
    """Redis, falling back to a local state file for as long as Redis does not answer."""

    def __init__(self, redis_history: RedisHistory, file_history: FileHistory) -> None:
        self.redis, self.file = redis_history, file_history
        self.where = redis_history.where

    def load(self, group: str) -> dict[TP, list[Observation]]:
        try:
            out = self.redis.load(group)
            self.where = self.redis.where
            return out
        except (redis.RedisError, ValueError):
            self.where = self.file.where
            return self.file.load(group)

    def save(self, group: str, windows: dict[TP, list[Observation]], ttl_s: float) -> None:
        try:
            self.redis.save(group, windows, ttl_s)
            self.where = self.redis.where
        except redis.RedisError:
            self.where = self.file.where
            self.file.save(group, windows, ttl_s)


def open_history(settings: Settings) -> SharedHistory:
    """The windows' home: Redis, or ``<stack_dir>/lag-history.json`` while Redis does not answer."""
    return SharedHistory(RedisHistory(RedisStore(settings)),
                         FileHistory(Path(settings.stack_dir) / "lag-history.json"))


def evaluate(groups: list[GroupLag], history: History, rules: Rules, now_ms: int) -> list[GroupLag]:
    """Fill in each partition's and group's status from its window, and store the advanced windows."""
    for g in groups:
        stored = history.load(g.group)
        to_store: dict[TP, list[Observation]] = {}
        rows = []
        for p in g.partitions:
            tp = (p.topic, p.partition)
            obs = Observation(now_ms, -1 if p.current_offset is None else p.current_offset, p.lag)
            window, to_store[tp] = advance(stored.get(tp, []), obs, rules)
            rows.append(replace(p, status=partition_status(window, rules)))
        g.partitions = rows
        g.status = worst([p.status for p in rows])
        # Nowhere to keep the window only shortens the next evaluation; the figures stay right.
        with contextlib.suppress(OSError):
            history.save(g.group, to_store, rules.max_age_ms / 1000)
    return groups
