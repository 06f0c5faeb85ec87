"""The JSON Schema of the wire event, generated from :class:`~streamrec.event_model.Event` by msgspec.

``docs/event.schema.json`` holds :func:`schema_text` (``streamrec schema --write``; a unit test keeps it in
sync), and the API's OpenAPI document takes its ``Event`` components from :func:`schema_components`, so
neither can drift from what the decoder accepts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from models.event_types import TYPE_NAMES, EventType
from streamrec.event_model import Event

DESCRIPTION = (f"One event of a registry type ({', '.join(TYPE_NAMES)}). Produce it to its type's topic ("
               + "; ".join(f"{t.value}: {t.topic.removeprefix('topic_')}" for t in EventType)
               + ") keyed by user_id, or POST to /v1/events.")
EXAMPLES: list[dict[str, Any]] = [
    {
        "event_id": "0b7e4f0c-3c57-4c43-9d0e-2f1f5a2b9c11",
        "user_id": "u-1842",
        "item_id": "sku-77",
        "type": "click",
        "ts": "2026-11-22T10:15:00Z",
        "session_id": "s-9",
        "context": {"page": "home", "category": "shoes"},
    },
    {
        "event_id": "5d1c2b8e-0f44-4a5e-8d55-2b6f7e0c1a22",
        "user_id": "u-1842",
        "item_id": "sku-77",
        "type": "purchase",
        "ts": 1795342500000,
        "quantity": 2,
        "price": 19.9,
    },
]


def schema_components(types: Sequence[Any], ref_template: str) -> dict[str, dict[str, Any]]:
    """JSON Schemas by name of ``types`` (structs holding :class:`Event`) and of everything they refer to."""
    _, components = msgspec.json.schema_components(types, ref_template=ref_template)
    if "Event" in components:  # the docstring is written for programmers: describe the wire form instead
        components["Event"].update(description=DESCRIPTION, examples=EXAMPLES)
    return components


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the wire event (what ``docs/event.schema.json`` holds)."""
    components = schema_components([Event], "#/$defs/{name}")
    schema = components.pop("Event")
    schema["$defs"] = components
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://streamrec.dev/schemas/event.schema.json"
    schema["title"] = "streamrec event"
    return schema


def schema_text() -> str:
    """The JSON Schema rendered as the file under docs/ stores it."""
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
