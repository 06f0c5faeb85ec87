"""Catalogue metadata in Redis: category, availability and attributes per item."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from streamrec.store import RedisStore, as_str


def put_items(store: RedisStore, items: Iterable[dict[str, Any]]) -> int:
    """Upsert items (``item_id``, optional ``category``, ``available`` (default true), other attributes)."""
    k = store.keys
    pipe = store.client.pipeline(transaction=False)
    n = 0
    for item in items:
        item_id = str(item["item_id"])
        available = bool(item.get("available", True))
        attrs = {key: v for key, v in item.items() if key not in ("item_id", "category", "available")}
        fields: dict[str, str] = {"available": "1" if available else "0", "attrs": json.dumps(attrs)}
        if item.get("category") is not None:
            fields["category"] = str(item["category"])
            pipe.hset(k.item_category, item_id, fields["category"])
        pipe.hset(k.item(item_id), mapping=fields)  # type: ignore[arg-type]
        if available:
            pipe.srem(k.unavailable, item_id)
        else:
            pipe.sadd(k.unavailable, item_id)
        n += 1
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return n


def get_item(store: RedisStore, item_id: str) -> dict[str, Any] | None:
    """The catalogue entry of one item, or None."""
    raw = store.client.hgetall(store.keys.item(item_id))
    if not raw:
        return None
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
