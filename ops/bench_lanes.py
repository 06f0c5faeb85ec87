"""API processes under load, compared side by side: one :class:`Lane` per process, driven in turn.

A comparison of two serving paths (exact scan vs index, hybrid vs ALS only, single Redis vs Redis Cluster)
measured one after the other on a shared machine measures the machine's drift as much as the code: a
neighbour's job during the second lane's seconds moves its p99 by a third. :func:`drive` instead gives
every lane its seconds in ``rounds`` turns, lane after lane, so a drift weighs on all of them alike, and
:meth:`Lane.figures` pools each lane's requests over its turns.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from online_api.loadgen import LoadResult, run_load
from online_api.server import ApiProcess

ROUNDS = 3  # the measured seconds of each lane are split into this many turns


def _say(msg: str) -> None:
    print(f"[bench api] {msg}", file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(api: ApiProcess, paths: Sequence[str] | None, connections: int, duration_s: float,
         path: str = "/healthz", start: int = 0, warmup_s: float = 2.0) -> tuple[LoadResult, str]:
    """Drive the API with ``paths`` in turn from ``start`` (or ``path`` alone) for ``duration_s`` after
    ``warmup_s``; returns the result and a note on CPU per request of server and load generator."""
    import itertools

    import uvloop

    it = itertools.cycle(paths) if paths else itertools.repeat(path)
    for _ in range(start % len(paths) if paths else 0):
        next(it)
    server0, client0 = cpu_s(api.pid), time.process_time()
    res = uvloop.run(run_load("127.0.0.1", api.port, lambda: next(it), connections=connections,
                              duration_s=duration_s, warmup_s=warmup_s))
    server1, client1 = cpu_s(api.pid), time.process_time()
    n = max(res.sent, 1)
    note = f"load generator {(client1 - client0) * 1000 / n:.3f} ms CPU/request"
    if server0 is not None and server1 is not None:
        note = f"server {(server1 - server0) * 1000 / n:.3f} ms CPU/request, {note}"
    return res, note


@dataclass
class Lane:
    """One API process under load (a serving path on some data) and what was measured on it."""

    name: str
    api: ApiProcess
    paths: list[str]
    results: list[LoadResult] = field(default_factory=list)
    sent: int = 0

    def figures(self) -> dict[str, float]:
        """Requests per second and server-side p50/p99 over every turn, and the non-200 answers."""
        server = self.server_ms()
        seconds = sum(r.duration_s for r in self.results)
        return {"rps": round(len(server) / seconds, 1) if seconds else 0.0,
                "p50_ms": round(LoadResult.pct(server, 50), 3), "p99_ms": round(LoadResult.pct(server, 99), 3),
                "non_200": self.non_200()}

    def server_ms(self) -> list[float]:
        return [ms for r in self.results for ms in r.server_ms]

    def client_ms(self) -> list[float]:
        return [ms for r in self.results for ms in r.client_ms]

    def non_200(self) -> int:
        return sum(c for r in self.results for s, c in r.statuses.items() if s != 200) + sum(
            r.errors for r in self.results)


def drive(lanes: Sequence[Lane], connections: int, duration_s: float, rounds: int = ROUNDS) -> None:
    """Give each lane ``duration_s`` of closed-loop load over ``rounds`` turns, lane after lane; each turn
    goes on along the lane's paths where its previous turn stopped (so no request is asked twice)."""
    each = duration_s / rounds
    for r in range(rounds):
        for lane in lanes:
            # a process's first turn warms it up (connections, caches); later ones only settle the loop
            res, note = load(lane.api, lane.paths, connections, each, start=lane.sent, warmup_s=2.0 if r == 0 else 0.5)
            lane.sent += res.sent
            lane.results.append(res)
            _say(f"round {r + 1}/{rounds}, {lane.name}: {res.rps:.0f} req/s, server-side ms p50 "
                 f"{res.pct(res.server_ms, 50):.3f} p99 {res.pct(res.server_ms, 99):.3f}; {note}")
