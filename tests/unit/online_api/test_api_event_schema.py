"""The collector documents exactly the event contract it decodes: OpenAPI's Event is msgspec's Event."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.ingest import COMPONENTS, MAX_BATCH_EVENTS, EventBatch
from streamrec.event_schema import EXAMPLES, event_json_schema, schema_components
from streamrec.events import MAX_ID_LEN, MAX_TS_MS, MIN_TS_MS, Event, decode_event, now_ms
from streamrec.settings import Settings


def openapi() -> dict[str, Any]:
    s = Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1")  # type: ignore[call-arg]
    return TestClient(create_app(s, background=False)).get("/openapi.json").json()  # type: ignore[no-any-return]


def test_the_collector_bodies_are_the_contract_schemas() -> None:
    spec = openapi()
    schemas = spec["components"]["schemas"]
    expected = schema_components([EventBatch], COMPONENTS)
    for name in ("Event", "EventType", "EventBatch"):
        assert schemas[name] == expected[name], name
    for path, name in (("/v1/events", "Event"), ("/v1/events:batch", "EventBatch")):
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
    batch = schemas["EventBatch"]
    assert batch["properties"]["events"] == {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                                             "minItems": 1, "maxItems": MAX_BATCH_EVENTS}
    assert batch["additionalProperties"] is False


def test_every_field_of_the_struct_is_documented_with_its_bounds() -> None:
    event = openapi()["components"]["schemas"]["Event"]
    fields = msgspec.structs.fields(Event)
    assert list(event["properties"]) == [f.name for f in fields]  # names, in wire order
    assert set(event["required"]) == {f.name for f in fields if f.required}
    assert event["additionalProperties"] is False  # unknown fields are refused
    props = event["properties"]
    for name in ("user_id", "item_id"):
        assert props[name]["minLength"] == 1 and props[name]["maxLength"] == MAX_ID_LEN and props[name]["pattern"]
    assert props["event_id"]["format"] == "uuid"
    ts_int, ts_text = props["ts"]["anyOf"]
    assert (ts_int["minimum"], ts_int["maximum"]) == (MIN_TS_MS, MAX_TS_MS) and ts_text["format"] == "date-time"
    assert props["quantity"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 10_000}
    assert props["price"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 1e9}
    context = props["context"]["anyOf"][0]
    assert context["maxProperties"] == 32 and context["propertyNames"] == {"maxLength": 64}


def test_the_schema_file_says_what_openapi_says() -> None:
    file_schema = event_json_schema()
    api = openapi()["components"]["schemas"]["Event"]
    refs = json.dumps(api).replace("#/components/schemas/", "#/$defs/")
    assert file_schema["properties"] == json.loads(refs)["properties"]


def test_the_documented_examples_are_valid_events() -> None:
    for example in EXAMPLES:
        event = decode_event(json.dumps(example).encode(), now=now_ms() + 10 * 365 * 86_400_000)
        assert event.event_id and event.user_id == example["user_id"]
