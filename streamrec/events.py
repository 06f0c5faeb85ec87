"""The event contract: click and purchase events as JSON.

Frontends send these to the collector (``POST /v1/events``) or straight to Kafka. Events live on two
topics (clicks, purchases) keyed by ``user_id`` so one user's events stay ordered in one partition.
``docs/event.schema.json`` is generated from :class:`Event` (``streamrec schema``); a test keeps it in sync.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

MAX_ID_LEN = 128
MAX_EVENT_BYTES = 8 * 1024
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_VALUE_LEN = 256
# Epoch milliseconds between 2000-01-01 and 2100-01-01: anything else is a unit mistake (seconds, µs).
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def utf8_text(value: str) -> str:
    """``value`` if it can be written as UTF-8 (no lone UTF-16 surrogates), else ValueError.

    JSON's ``\\ud83d`` escapes decode to such strings; Redis, Kafka headers and logs cannot hold them.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (a lone UTF-16 surrogate is not)") from None
    return value


def check_id(value: str, what: str) -> str:
    """``value`` if it follows the opaque-id rules (1-128 characters, no control characters, UTF-8)."""
    if not 1 <= len(value) <= MAX_ID_LEN or _CONTROL.search(value):
        raise ValueError(f"{what} must be 1-{MAX_ID_LEN} characters without control characters")
    return utf8_text(value)


# Opaque ids: 1-128 characters, no control characters (they break logs, keys and terminals), UTF-8.
OpaqueId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN), AfterValidator(utf8_text)]


def _context_value(value: Any) -> str | int | float | bool | None:
    """A context value: UTF-8 text, a finite number, a boolean or null; nothing is coerced."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number (NaN and Infinity are not JSON)")
        return value
    if isinstance(value, str):
        return utf8_text(value)
    raise ValueError("must be a string, number, boolean or null (context is flat)")


ContextValue = Annotated[
    Any,
    BeforeValidator(_context_value),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                              {"type": "null"}]}),
]


class EventType(StrEnum):
    """What the user did."""

    CLICK = "click"
    PURCHASE = "purchase"


class InvalidEvent(ValueError):
    """An event that breaks the contract. ``reason`` is a short code for metrics and the dead-letter topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Event(BaseModel):
    """One click or purchase. Unknown fields are rejected so typos surface instead of vanishing."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b7e4f0c-3c57-4c43-9d0e-2f1f5a2b9c11",
                    "user_id": "u-1842",
                    "item_id": "sku-77",
                    "type": "click",
                    "ts": "2026-11-22T10:15:00Z",
                    "session_id": "s-9",
                    "context": {"page": "home"},
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
        },
    )

    event_id: uuid.UUID = Field(description="client-made UUID; the same id sent twice is applied once")
    user_id: OpaqueId = Field(description="opaque user id, the Kafka key")
    item_id: OpaqueId = Field(description="opaque item id")
    type: EventType
    ts: Annotated[
        int,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": MIN_TS_MS, "maximum": MAX_TS_MS},
                    {"type": "string", "format": "date-time"},
                ]
            }
        ),
    ] = Field(description="event time: ISO 8601 string or epoch milliseconds; stored as epoch ms")
    session_id: OpaqueId | None = None
    quantity: StrictInt | None = Field(None, ge=1, le=10_000, description="purchases only")
    price: Annotated[float, Field(strict=True)] | None = Field(None, ge=0, le=1e9,
                                                               description="unit price, purchases only")
    context: dict[Annotated[str, Field(max_length=64)], ContextValue] | None = Field(
        None, description=f"free-form flat context, at most {MAX_CONTEXT_KEYS} keys"
    )

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("ts must be ISO 8601 or epoch milliseconds")
        if isinstance(value, int | float):
            # int(inf) raises OverflowError, which pydantic does not turn into a validation error: JSON
            # such as 1e400 or Infinity must be rejected as invalid input, not crash the caller.
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("ts must be a finite number")
            ms = int(value)
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError("ts must be ISO 8601 or epoch milliseconds") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            ms = int(parsed.timestamp() * 1000)
        else:
            raise ValueError("ts must be ISO 8601 or epoch milliseconds")
        if not MIN_TS_MS <= ms <= MAX_TS_MS:
            raise ValueError("ts out of range: expected epoch milliseconds between 2000 and 2100")
        return ms

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: dict[str, ContextValue] | None) -> dict[str, ContextValue] | None:
        if value is None:
            return None
        if len(value) > MAX_CONTEXT_KEYS:
            raise ValueError(f"context has more than {MAX_CONTEXT_KEYS} keys")
        for key, item in value.items():
            if isinstance(item, str) and len(item) > MAX_CONTEXT_VALUE_LEN:
                raise ValueError(f"context[{key!r}] longer than {MAX_CONTEXT_VALUE_LEN} characters")
        category = value.get("category")
        if category is not None:  # it names Redis keys (per-category trending): an id, nothing else
            if not isinstance(category, str):
                raise ValueError("context.category must be a string")
            check_id(category, "context.category")
        return value

    @model_validator(mode="after")
    def _purchase_fields(self) -> Event:
        if self.type is EventType.CLICK and (self.quantity is not None or self.price is not None):
            raise ValueError("quantity and price are for purchase events only")
        return self

    def to_json_bytes(self) -> bytes:
        """Canonical wire form: compact JSON, ``ts`` as epoch milliseconds, unset optionals left out."""
        return self.model_dump_json(exclude_none=True).encode()

    @property
    def key(self) -> bytes:
        """The Kafka message key: the user id, so one user's events stay in one partition."""
        return self.user_id.encode()


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "event"
    return f"{loc}: {err['msg']}"


def decode_event(raw: bytes | None, *, now: int | None = None, max_future_ms: int = 300_000) -> Event:
    """Decode and validate one wire event, or raise :class:`InvalidEvent` with a reason code.

    Reason codes: ``empty``, ``oversized``, ``bad_json``, ``not_object``, ``invalid_field``,
    ``future_timestamp``.
    """
    if not raw:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("bad_json", str(exc)[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(payload).__name__}")
    return validate_event(payload, now=now, max_future_ms=max_future_ms)


def validate_event(payload: dict[str, Any], *, now: int | None = None, max_future_ms: int = 300_000) -> Event:
    """Validate an already-parsed event object (see :func:`decode_event` for the reason codes)."""
    try:
        event = Event.model_validate(payload)
    except ValidationError as exc:
        raise InvalidEvent("invalid_field", _first_error(exc)) from None
    current = now_ms() if now is None else now
    if event.ts > current + max_future_ms:
        raise InvalidEvent("future_timestamp", f"ts is {(event.ts - current) / 1000:.0f}s in the future")
    return event


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of the wire event (what ``docs/event.schema.json`` holds)."""
    schema = Event.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://streamrec.dev/schemas/event.schema.json"
    schema["title"] = "streamrec event"
    schema["description"] = (
        "A click or purchase event. Produce to the clicks or purchases topic keyed by user_id, "
        "or POST to /v1/events."
    )
    return schema


def schema_text() -> str:
    """The JSON Schema rendered as the file under docs/ stores it."""
    return json.dumps(event_json_schema(), indent=2, sort_keys=True) + "\n"
