"""Catalogue metadata in Redis: category, availability and attributes per item."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from streamrec.store import RedisStore, as_str


def put_items(store: RedisStore, items: Iterable[dict[str, Any]], chunk: int = 1_000) -> int:
    """Upsert items (``item_id``, optional ``category``, ``available`` (default true), other attributes).

    One HSET per item plus, per chunk, one HSET of the categories and one SREM/SADD of availability (a
    catalogue import writes tens of thousands a second); an item given twice keeps its last entry."""
    k = store.keys
    n = 0
    pending: dict[str, tuple[dict[str, str], bool]] = {}

    def flush() -> None:
        if not pending:
            return
        pipe = store.client.pipeline(transaction=False)
        for item_id, (fields, _) in pending.items():
            pipe.hset(k.item(item_id), mapping=fields)  # type: ignore[arg-type]
        categories = {i: f["category"] for i, (f, _) in pending.items() if "category" in f}
        if categories:
            pipe.hset(k.item_category, mapping=categories)  # type: ignore[arg-type]
        available = [i for i, (_, a) in pending.items() if a]
        if available:
            pipe.srem(k.unavailable, *available)
        gone = [i for i, (_, a) in pending.items() if not a]
        if gone:
            pipe.sadd(k.unavailable, *gone)
        pipe.execute()
        pending.clear()

    for item in items:
        item_id = str(item["item_id"])
        available = bool(item.get("available", True))
        attrs = {key: v for key, v in item.items() if key not in ("item_id", "category", "available")}
        fields: dict[str, str] = {"available": "1" if available else "0", "attrs": json.dumps(attrs)}
        if item.get("category") is not None:
            fields["category"] = str(item["category"])
        if item_id in pending:  # the earlier entry is written first: the last one wins, as one by one
            flush()
        pending[item_id] = (fields, available)
        n += 1
        if len(pending) >= chunk:
            flush()
    flush()
    return n


def get_item(store: RedisStore, item_id: str) -> dict[str, Any] | None:
    """The catalogue entry of one item, or None."""
    raw = store.client.hgetall(store.keys.item(item_id))
    return _entry(item_id, raw) if raw else None


def _entry(item_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    fields = {as_str(k): as_str(v) for k, v in raw.items()}
    return {
        "item_id": item_id,
        "category": fields.get("category"),
        "available": fields.get("available", "1") == "1",
        **json.loads(fields.get("attrs", "{}")),
    }


def categories_of(store: RedisStore, item_ids: list[str]) -> list[str | None]:
    """Category of each item (None when unknown)."""
    if not item_ids:
        return []
    raw = store.client.hmget(store.keys.item_category, item_ids)
    return [as_str(r) if r is not None else None for r in raw]


def content_record(entry: dict[str, Any]) -> dict[str, Any]:
    """What content features are made of: the category and the attributes (not the id or availability)."""
    return {k: v for k, v in entry.items() if k not in ("item_id", "available")}


def iter_catalogue(store: RedisStore, chunk: int = 1_000) -> Iterator[dict[str, Any]]:
    """Every catalogue entry (as :func:`get_item` returns it), scanned in pages (for the refit)."""
    head = f"{store.keys.prefix}:item:{{"
    pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in head) + "*"  # glob-escape the prefix
    keys: list[bytes] = []

    def read(batch: list[bytes]) -> Iterator[dict[str, Any]]:
        pipe = store.client.pipeline(transaction=False)
        for key in batch:
            pipe.hgetall(key)
        for key, raw in zip(batch, pipe.execute(), strict=True):
            if raw:
                yield _entry(as_str(key)[len(head) : -1], raw)

    for key in store.client.scan_iter(match=pattern, count=5_000):
        keys.append(key)
        if len(keys) >= chunk:
            yield from read(keys)
            keys = []
    if keys:
        yield from read(keys)
