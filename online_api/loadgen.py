"""A small closed-loop HTTP/1.1 load generator: keep-alive connections on raw asyncio streams.

Cheap per request (no HTTP client library), so one core of a small machine can drive thousands of
requests per second. Bounded in connections and time; reads the server's ``Server-Timing: app;dur=``
header to separate server-side latency from client-side latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    """Latencies in milliseconds of the requests completed in the measured window."""

    duration_s: float
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    sent: int = 0  # every request answered, warm-up included

    @property
    def requests(self) -> int:
        return len(self.client_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")


def _server_ms(head: bytes) -> float | None:
    at = head.find(b"server-timing: app;dur=")
    if at < 0:
        return None
    start = at + len(b"server-timing: app;dur=")
    end = head.find(b"\r\n", start)
    return float(head[start:end])


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end])


async def _worker(host: str, port: int, next_path: Callable[[], str], deadline: float, measure_from: float,
                  result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    host_header = f"Host: {host}:{port}\r\n\r\n".encode()
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            writer.write(b"GET " + next_path().encode() + b" HTTP/1.1\r\n" + host_header)
            t0 = time.perf_counter()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                body_len = _content_length(head)
                if body_len:
                    await reader.readexactly(body_len)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                return
            t1 = time.perf_counter()
            result.sent += 1
            if t0 < measure_from:
                continue
            status = int(head[9:12])
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.client_ms.append((t1 - t0) * 1000)
            server = _server_ms(head)
            if server is not None:
                result.server_ms.append(server)
    finally:
        writer.close()


async def run_load(host: str, port: int, next_path: Callable[[], str], *, connections: int, duration_s: float,
                   warmup_s: float = 2.0) -> LoadResult:
    """``connections`` clients, each sending the next request as soon as the previous answer arrived."""
    start = time.perf_counter()
    measure_from = start + warmup_s
    deadline = measure_from + duration_s
    result = LoadResult(duration_s=duration_s)
    await asyncio.gather(*(_worker(host, port, next_path, deadline, measure_from, result)
                           for _ in range(connections)))
    result.duration_s = time.perf_counter() - measure_from
    return result
