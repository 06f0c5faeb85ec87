"""The event contract, defined once: :class:`Event`, a msgspec ``Struct`` with ``Meta`` constraints.

msgspec checks types, lengths and bounds in C while it reads the JSON; ``Event.__post_init__`` adds the
rules ``Meta`` cannot state (id characters, type-only fields such as a purchase's quantity,
``context.category``, ISO times). Decode with :mod:`streamrec.events` (which re-exports everything
here); ``docs/event.schema.json`` and the API's OpenAPI schemas are generated from :class:`Event`
(:mod:`streamrec.event_schema`). The event types, their topics, weights and type-only fields come
from the registry, :mod:`models.event_types`.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import Meta

from models.event_types import TYPE_ONLY_FIELDS, EventType

MAX_ID_LEN = 128
MAX_EVENT_BYTES = 8 * 1024
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_KEY_LEN = 64
MAX_CONTEXT_VALUE_LEN = 256
MAX_QUANTITY = 10_000
MAX_PRICE = 1e9
# Epoch milliseconds between 2000-01-01 and 2100-01-01: anything else is a unit mistake (seconds, µs).
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
ID_RULE = f"must be 1-{MAX_ID_LEN} characters without control characters"
# What an id may not hold: control characters, and lone UTF-16 surrogates (JSON's "\ud83d" escapes decode
# to them; Redis, Kafka headers and logs cannot hold them).
_NOT_ID_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Opaque ids. The character rule is checked in ``Event.__post_init__`` (``str.isprintable()`` settles
# the usual id in one C call; only a non-printable one is searched) rather than as ``Meta(pattern=...)``:
# msgspec runs a pattern as a Python ``re`` search per string, which more than doubled the decode time of
# an event (three ids). The pattern is still in the JSON Schema.
OpaqueId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN, extra_json_schema={"pattern": ID_PATTERN})]
EpochMs = Annotated[int, Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]
IsoTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
Price = Annotated[float, Meta(ge=0, le=MAX_PRICE)]
ContextKey = Annotated[str, Meta(max_length=MAX_CONTEXT_KEY_LEN)]
ContextValue = Annotated[str, Meta(max_length=MAX_CONTEXT_VALUE_LEN)] | int | float | bool | None
Context = Annotated[dict[ContextKey, ContextValue], Meta(max_length=MAX_CONTEXT_KEYS)]


class InvalidEvent(ValueError):
    """An event that breaks the contract. ``reason`` is a short code for metrics and the dead-letter topic.

    ``detail`` starts with the field's path (``context.category: ...``) when one field is at fault.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One event of a registry type (view, click, add_to_cart, purchase).

    Unknown fields are rejected so typos surface instead of vanishing.

    Constructing one in code checks only the rules of ``__post_init__`` (as a dataclass would, the field
    types are the caller's promise); input from outside goes through :func:`streamrec.events.decode_event`.
    """

    event_id: Annotated[uuid.UUID, Meta(description="client-made UUID; the same id sent twice is applied once")]
    user_id: Annotated[OpaqueId, Meta(description="opaque user id, the Kafka key")]
    item_id: Annotated[OpaqueId, Meta(description="opaque item id")]
    type: Annotated[EventType, Meta(description="what the user did (models/event_types.py lists the types)")]
    if TYPE_CHECKING:  # after __post_init__ it is always epoch milliseconds
        ts: int
    else:
        ts: Annotated[EpochMs | IsoTime, Meta(
            description="event time: ISO 8601 string or epoch milliseconds; stored as epoch ms")]
    session_id: Annotated[OpaqueId | None, Meta(description="opaque session id (the rules of the ids)")] = None
    quantity: Annotated[Quantity | None, Meta(description="purchases only")] = None
    price: Annotated[Price | None, Meta(description="unit price, purchases only")] = None
    context: Annotated[Context | None, Meta(description=(
        f"free-form flat context: at most {MAX_CONTEXT_KEYS} keys; values are strings, finite numbers, "
        "booleans or null; `category`, when present, follows the id rules (it names per-category trending)"))] = None

    def __post_init__(self) -> None:
        # Runs on every decode, after msgspec's own checks; a ValueError here becomes a ValidationError
        # whose message starts with the field's path.
        if type(self.ts) is str:
            msgspec.structs.force_setattr(self, "ts", iso_ms(self.ts))
        u, i, s = self.user_id, self.item_id, self.session_id
        # A printable string holds no control character and no lone surrogate (neither is printable).
        if not (u.isprintable() and i.isprintable()):
            _require_id_text("user_id", u)
            _require_id_text("item_id", i)
        if s is not None and not s.isprintable():
            _require_id_text("session_id", s)
        if self.quantity is not None or self.price is not None:
            _check_type_fields(self)
        if self.context is not None:
            problem = context_problem(self.context)
            if problem is not None:
                raise ValueError(f"{problem[0]}: {problem[1]}")

    def to_json_bytes(self) -> bytes:
        """Canonical wire form: compact JSON, ``ts`` as epoch milliseconds, unset optionals left out."""
        return _ENCODE(self)

    @property
    def key(self) -> bytes:
        """The Kafka message key: the user id, so one user's events stay in one partition."""
        return self.user_id.encode()


def _check_type_fields(event: Event) -> None:
    """A ``ValueError`` naming the first set field that the registry does not allow for ``event.type``."""
    for name, types in TYPE_ONLY_FIELDS.items():
        if getattr(event, name) is not None and event.type not in types:
            fields = sorted({f for t in types for f in t.fields}, key=list(TYPE_ONLY_FIELDS).index)
            kinds = "/".join(sorted(t.value for t in types))
            raise ValueError(f"{name}: {' and '.join(fields)} are for {kinds} events only")


def id_text_ok(value: str) -> bool:
    """Whether ``value`` holds no control character and no lone surrogate (lengths are msgspec's)."""
    return value.isprintable() or _NOT_ID_TEXT.search(value) is None


def _require_id_text(name: str, value: str) -> None:
    if not id_text_ok(value):
        raise ValueError(f"{name}: {ID_RULE} (and valid Unicode)")


def iso_ms(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC when it names no zone), within the contract's range."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise ValueError("ts: must be ISO 8601 or epoch milliseconds") from None
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ValueError("ts: out of range: expected a time between 2000 and 2100")
    return ms


def shown_key(key: str) -> str:
    """A context key as it can appear in a field path (control characters and surrogates escaped)."""
    text = key if key.isprintable() else ascii(key)[1:-1]
    return text if len(text) <= MAX_CONTEXT_KEY_LEN else text[:MAX_CONTEXT_KEY_LEN] + "..."


def context_problem(context: dict[str, Any]) -> tuple[str, str] | None:
    """(path, message) of the first context rule msgspec's types cannot state, or None.

    Decoding JSON bytes, msgspec already refuses lone surrogates and NaN/Infinity; values that come from
    ``json.loads`` (the slow path) or from code can hold them, so they are checked here for every origin.
    """
    for key, value in context.items():
        if not key.isascii() and _SURROGATE.search(key):
            return "context", f"key {shown_key(key)!r} must be valid Unicode text (not a lone UTF-16 surrogate)"
        kind = type(value)
        if kind is float and not math.isfinite(value):
            return f"context.{shown_key(key)}", "must be a finite number (NaN and Infinity are not JSON)"
        if kind is str and not value.isascii() and _SURROGATE.search(value):
            return f"context.{shown_key(key)}", "must be valid Unicode text (a lone UTF-16 surrogate is not)"
    category = context.get("category")
    # It names Redis keys (per-category trending): an id, nothing else.
    if category is not None and (type(category) is not str or not 1 <= len(category) <= MAX_ID_LEN
                                 or not id_text_ok(category)):
        return "context.category", f"must be an id: a string of 1-{MAX_ID_LEN} characters without control characters"
    return None


_ENCODE = msgspec.json.Encoder().encode
