"""Trending items in Redis: sliding, decayed windows of item popularity, overall and per category.

The worker adds each event's weight to a bucket per minute (``trend:m:<epoch minute>``, kept 2 h) and per
hour (``trend:h:<epoch hour>``, kept 26 h), overall and per category, and to the all-time ``popular``
sorted sets. A window's score sums its buckets with an exponential decay by bucket age, so the ranking
slides smoothly instead of jumping when a bucket expires.

Every key derived from a category expires: the buckets with their window, the per-category all-time
set ``popular:c:<category>`` ``POPULAR_CATEGORY_TTL_S`` (30 days) after it was last written. Categories
come from the catalogue or, for items it does not know, from the event's ``context.category``, which any
holder of an ingest key can choose; so a category nobody sends any more disappears instead of staying in
Redis for ever. Only the overall ``popular`` set never expires.
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


POPULAR_CATEGORY_TTL_S = 30 * 86_400

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
            pipe.expire(k.popular(category), POPULAR_CATEGORY_TTL_S)


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


# --- write-side helper for the streaming worker -----------------------------------------------------
# ZINCRBY takes one member per call, and a batch touches thousands of (item, key) pairs; Redis's per-call
# overhead would dominate. One EVAL per bucket instead: for each key, ZMSCORE the members, add the
# increments, and ZADD them back in one call (atomic inside the script, so equal to ZINCRBY each).
# KEYS = the bucket's keys (overall, then per category); ARGV = [ttl_1, ..., ttl_n (0: none), rows_1, ...,
# rows_n] where rows_i are key i's distinct members as "item \x1f weight" joined by \x1e (ids hold no control
# characters).
_ZINCR_LUA = """
local n = #KEYS
for i = 1, n do
  local ttl = tonumber(ARGV[i])
  local items, incs = {}, {}
  for item, weight in string.gmatch(ARGV[n + i], "([^\\31\\30]+)\\31([^\\31\\30]+)") do
    items[#items + 1] = item
    incs[#incs + 1] = tonumber(weight)
  end
  for start = 1, #items, 2000 do
    local stop = math.min(start + 1999, #items)
    local cur, args = redis.call('ZMSCORE', KEYS[i], unpack(items, start, stop)), {}
    for j = start, stop do
      args[#args + 1] = (tonumber(cur[j - start + 1]) or 0) + incs[j]
      args[#args + 1] = items[j]
    end
    redis.call('ZADD', KEYS[i], unpack(args))
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return #KEYS
"""


def add_counts_many(
    pipe: Pipeline,
    store: RedisStore,
    counts: Mapping[tuple[int, str, str | None], float],
) -> None:
    """Queue on ``pipe`` what :func:`add_counts` does, for many timestamps at once, in one EVAL per bucket.

    ``counts`` maps (ts_ms, item, category) to the weight to add; timestamps in one bucket land in the
    same keys. Same keys, scores and TTLs as :func:`add_counts`, the all-time ``popular`` sets included.
    """
    if not counts:
        return
    # (granularity, bucket; None for popular) -> category (None: overall) -> {item: weight}
    groups: dict[tuple[str, int | None], dict[str | None, dict[str, float]]] = {}
    targets: dict[int, list[tuple[str, int | None]]] = {}
    for (ts_ms, item, category), weight in counts.items():
        minute = ts_ms // 60_000
        if minute not in targets:
            targets[minute] = [*((w.granularity, ts_ms // 1000 // w.bucket_s) for w in WINDOWS.values()),
                               ("popular", None)]
        for target in targets[minute]:
            by_cat = groups.setdefault(target, {})
            for cat in (None, category) if category else (None,):
                members = by_cat.setdefault(cat, {})
                members[item] = members.get(item, 0.0) + weight
    ttl = {w.granularity: w.ttl_s for w in WINDOWS.values()}
    ttl["popular"] = POPULAR_CATEGORY_TTL_S  # for the per-category sets; the overall one (None) never expires
    encoded: dict[frozenset[tuple[str, float]], str] = {}  # buckets usually share members: encode once
    for (granularity, bucket), by_cat in groups.items():
        payloads = []
        for members in by_cat.values():
            sig = frozenset(members.items())
            if sig not in encoded:
                encoded[sig] = "\x1e".join(f"{item}\x1f{weight!r}" for item, weight in members.items())
            payloads.append(encoded[sig])
        keys = [_bucket_key(store, granularity, bucket, cat) for cat in by_cat]
        ttls = [0 if granularity == "popular" and cat is None else ttl[granularity] for cat in by_cat]
        pipe.execute_command("EVAL", _ZINCR_LUA, len(keys), *keys, *ttls, *payloads)


def _bucket_key(store: RedisStore, granularity: str, bucket: int | None, category: str | None) -> str:
    return store.keys.popular(category) if bucket is None else store.keys.trend(granularity, bucket, category)
