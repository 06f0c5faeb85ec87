"""`streamrec bench memory` on real Redis: it measures what the project's writers store, and leaves no keys."""

from __future__ import annotations

from ops.bench_memory import MemoryConfig, measure
from streamrec.settings import Settings
from streamrec.store import RedisStore

ENTRY_BYTES = len("item-1234\x1f1\x1f1760000000000\x1fclick")  # a history entry's payload, at least


def test_bytes_per_user_and_item_cover_the_payload_and_the_keys_are_removed(settings: Settings) -> None:
    cfg = MemoryConfig(users=3_000, history=40, items=2_000, factors=16)
    got = measure(settings, cfg)
    per_user = got["bytes_per_user"]
    assert per_user["history"] >= cfg.history * ENTRY_BYTES  # the entries themselves, plus the list's overhead
    assert per_user["vector"] >= 4 * cfg.factors and per_user["counters"] > 0
    assert per_user["total"] == per_user["history"] + per_user["counters"] + per_user["vector"]
    assert got["bytes_per_item"]["factors"] >= 4 * cfg.factors
    store = RedisStore(settings)
    try:
        assert not list(store.client.scan_iter(f"{settings.redis_prefix}:bench-memory-*", count=1000))
    finally:
        store.close()
