"""Trending items in Redis: sliding, decayed windows of item popularity, overall and per category.

The worker adds each event's weight to a bucket per minute (``trend:m:<epoch minute>``, kept 2 h) and per
hour (``trend:h:<epoch hour>``, kept 26 h), overall and per category, and to the all-time ``popular``
sorted sets. A window's score sums its buckets with an exponential decay by bucket age, so the ranking
slides smoothly instead of jumping when a bucket expires.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis.client import Pipeline

from streamrec.store import RedisStore, as_str


@dataclass(frozen=True)
class Window:
    """A trending window built from buckets of ``bucket_s`` seconds."""

    name: str
    granularity: str
    bucket_s: int
    buckets: int
    half_life_buckets: float
    ttl_s: int


WINDOWS: dict[str, Window] = {
    "1h": Window("1h", "m", 60, 60, 30.0, 2 * 3600),
    "1d": Window("1d", "h", 3600, 24, 12.0, 26 * 3600),
}


def add_counts(
    pipe: Pipeline,
    store: RedisStore,
    ts_ms: int,
    counts: Mapping[tuple[str, str | None], float],
) -> None:
    """Queue on ``pipe``: add weights per (item, category) at time ``ts_ms`` to every window and to popular."""
    k = store.keys
    for window in WINDOWS.values():
        bucket = ts_ms // 1000 // window.bucket_s
        touched: set[str] = set()
        for (item, category), weight in counts.items():
            for key in (k.trend(window.granularity, bucket), k.trend(window.granularity, bucket, category)
                        if category else None):
                if key is not None:
                    pipe.zincrby(key, weight, item)
                    touched.add(key)
        for key in touched:
            pipe.expire(key, window.ttl_s)
    for (item, category), weight in counts.items():
        pipe.zincrby(k.popular(), weight, item)
        if category:
            pipe.zincrby(k.popular(category), weight, item)


def top_trending(
    store: RedisStore, window: str = "1h", category: str | None = None, k: int = 10,
    now_ms: int | None = None, exclude: set[str] | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` items with the highest decayed weight in ``window`` ("1h" or "1d"), best first."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {sorted(WINDOWS)}")
    w = WINDOWS[window]
    now_s = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) // 1000
    current = now_s // w.bucket_s
    keys = [store.keys.trend(w.granularity, current - age, category) for age in range(w.buckets)]
    weights = [0.5 ** (age / w.half_life_buckets) for age in range(w.buckets)]
    # ZUNION with WEIGHTS runs in Redis: one round trip whatever the window length. Callers on a hot
    # path (the API) cache the answer for a second or two.
    raw = store.client.execute_command("ZUNION", len(keys), *keys, "WEIGHTS", *weights, "WITHSCORES")
    if raw and isinstance(raw[0], list | tuple):  # redis-py parses WITHSCORES into pairs
        pairs = [(as_str(m), float(sc)) for m, sc in raw]
    else:
        pairs = [(as_str(raw[i]), float(raw[i + 1])) for i in range(0, len(raw), 2)]
    pairs.sort(key=lambda p: (-p[1], p[0]))
    out = [(m, s) for m, s in pairs if not exclude or m not in exclude]
    return out[: max(k, 0)]


def top_popular(store: RedisStore, category: str | None = None, k: int = 10,
                exclude: set[str] | None = None) -> list[tuple[str, float]]:
    """All-time most popular items (weighted), best first."""
    raw = store.client.zrevrange(store.keys.popular(category), 0, k + len(exclude or ()) - 1, withscores=True)
    out = [(as_str(m), float(s)) for m, s in raw]  # type: ignore[str-unpack]
    return [(m, s) for m, s in out if not exclude or m not in exclude][:k]
