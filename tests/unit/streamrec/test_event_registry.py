"""The event-type registry (models/event_types.py) is the single source of every type's facts."""

from __future__ import annotations

import json
import uuid

import pytest

from models.event_types import BY_CODE, DEFAULT_WEIGHTS, TYPE_NAMES, TYPE_ONLY_FIELDS, EventType, type_named
from streamrec.event_schema import event_json_schema
from streamrec.events import Event, InvalidEvent, decode_event
from streamrec.settings import Settings

NOW = 1_800_000_000_000


def _raw(**fields: object) -> bytes:
    base = {"event_id": str(uuid.uuid4()), "user_id": "u1", "item_id": "i1", "type": "click", "ts": NOW}
    return json.dumps({**base, **fields}).encode()


def test_every_type_has_a_topic_setting_a_weight_setting_and_known_fields() -> None:
    settings, fields = Settings(), Settings.model_fields
    event_fields = set(Event.__struct_fields__)
    for t in EventType:
        assert t.topic in fields and settings.topic_for(t.value) == getattr(settings, t.topic)
        weight = fields[t.weight_setting]
        assert weight.default == t.default_weight == DEFAULT_WEIGHTS[t.value]
        assert weight.description and settings.type_weights[t.value] == t.default_weight
        assert set(t.fields) <= event_fields
        assert BY_CODE[t.code] is t and type_named(t.value) is t
    assert [t.code for t in EventType] == list(range(len(EventType)))
    # the worker and the batch job read exactly the registry's topics, each once
    assert settings.event_topics == list(dict.fromkeys(getattr(settings, t.topic) for t in EventType))
    assert settings.event_topics == [settings.topic_clicks, settings.topic_purchases]
    # no stray weight setting names a type the registry does not know
    assert {f.removesuffix("_weight") for f in fields if f.endswith("_weight") and not f.startswith(
        ("rank_", "similar_", "covis_", "blend"))} == set(TYPE_NAMES)
    with pytest.raises(ValueError, match="unknown event type"):
        type_named("like")


def test_defaults_and_add_to_cart_and_view() -> None:
    assert DEFAULT_WEIGHTS == {"view": 0.5, "click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    s = Settings()
    assert s.topic_for("add_to_cart") == s.topic_for("view") == s.topic_clicks
    assert s.topic_for("purchase") == s.topic_purchases
    w = Settings(add_to_cart_weight=2.5).weighting(3600.0)
    assert w.type_weight("add_to_cart") == 2.5 and w.half_life_s == 3600.0


def test_json_schema_lists_exactly_the_registry_types() -> None:
    schema = event_json_schema()
    assert sorted(schema["$defs"]["EventType"]["enum"]) == sorted(TYPE_NAMES)
    for name in TYPE_NAMES:
        assert name in schema["description"]


def test_type_only_fields_follow_the_registry() -> None:
    assert {"quantity": {EventType.PURCHASE}, "price": {EventType.PURCHASE}} == TYPE_ONLY_FIELDS
    for t in EventType:
        assert decode_event(_raw(type=t.value), now=NOW).type is t
        for name in TYPE_ONLY_FIELDS:
            raw = _raw(type=t.value, **{name: 2})
            if t in TYPE_ONLY_FIELDS[name]:
                assert getattr(decode_event(raw, now=NOW), name) == 2
            else:
                with pytest.raises(InvalidEvent, match=f"{name}: quantity and price are for purchase events only"):
                    decode_event(raw, now=NOW)
    with pytest.raises(InvalidEvent) as exc:
        decode_event(_raw(type="like"), now=NOW)
    assert exc.value.reason == "invalid_field" and exc.value.detail.startswith("type")
