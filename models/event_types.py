"""The event-type registry: every kind of event the system knows, one entry each.

An entry names the type (its wire value), the :class:`~streamrec.settings.Settings` field of the Kafka
topic it is produced to, its default interaction weight (overridden by the setting ``<type>_weight``) and
the optional fields only that type may carry. Everything else is derived from this table: the contract's
``type`` enum and its type-only fields check (:mod:`streamrec.event_model`), the JSON Schema, the topics
the worker and the batch job read (``Settings.event_topics``), the weights (:mod:`models.weighting`), the
small type codes of the batch path (:attr:`EventType.code`) and the snapshot's per-type sums.

It lives in ``models/`` (pure data, no imports of ours) so the numeric core and every layer above share
the same table. Adding a type: one member here plus its ``<type>_weight`` setting.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """What the user did."""

    # Each member: wire name, topic setting, default weight, type-only fields.

    _value_: str
    topic: str  # the Settings field naming the topic events of this type are produced to
    default_weight: float  # interaction weight unless the setting <type>_weight says otherwise
    fields: tuple[str, ...]  # optional fields only this type may carry, in the contract's order
    code: int  # small integer code: the position in this table (the batch path's per-event type)

    VIEW = "view", "topic_clicks", 0.5, ()
    CLICK = "click", "topic_clicks", 1.0, ()
    ADD_TO_CART = "add_to_cart", "topic_clicks", 3.0, ()
    PURCHASE = "purchase", "topic_purchases", 5.0, ("quantity", "price")

    def __new__(cls, value: str, topic: str, default_weight: float, fields: tuple[str, ...]) -> EventType:
        member = str.__new__(cls, value)
        member._value_ = value
        member.topic = topic
        member.default_weight = default_weight
        member.fields = tuple(fields)
        member.code = len(cls.__members__)
        return member

    @property
    def weight_setting(self) -> str:
        """The Settings field of this type's interaction weight."""
        return f"{self.value}_weight"


TYPE_NAMES: tuple[str, ...] = tuple(t.value for t in EventType)  # in code order
BY_CODE: tuple[EventType, ...] = tuple(EventType)
TYPE_ONLY_FIELDS: dict[str, frozenset[EventType]] = {
    f: frozenset(t for t in EventType if f in t.fields) for t in EventType for f in t.fields}
_BY_NAME: dict[str, EventType] = {t.value: t for t in EventType}
DEFAULT_WEIGHTS: dict[str, float] = {t.value: t.default_weight for t in EventType}


def type_named(name: str) -> EventType:
    """The type whose wire name is ``name``; ``ValueError`` for a name not in the registry."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown event type {name!r}; expected one of {TYPE_NAMES}") from None
