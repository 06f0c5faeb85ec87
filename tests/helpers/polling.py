"""Wait for a condition the system reaches by itself (a worker applying events, an API process refreshing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float,
         interval_s: float = 0.1) -> tuple[Any, float]:
    """Call ``fetch`` until ``done`` holds for its answer or ``timeout_s`` pass; the last answer and the wait."""
    start = time.monotonic()
    while True:
        got = fetch()
        if done(got) or time.monotonic() - start > timeout_s:
            return got, time.monotonic() - start
        time.sleep(interval_s)
