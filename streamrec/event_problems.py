"""Why an event object breaks the contract: the problems, each with its field's path.

Only needed once an event was refused: :class:`~streamrec.event_model.Event` (through msgspec) is the
judge, this module names the fields for people. msgspec stops at the first error and says only
``$.context[...]`` for a context value; here every field is checked on its own against the Struct's own
field types (``msgspec.structs.fields``), context entries one by one, so the collector can list every
problem in its 422 and a dead letter's detail starts with the field at fault (``context.page: ...``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from streamrec.event_model import ContextKey, ContextValue, Event, shown_key

Problem = tuple[str, str]  # (field path, message)
_FIELDS = {f.name: f for f in msgspec.structs.fields(Event)}
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_MESSAGE = 200


def judge(payload: dict[str, Any]) -> Event | list[Problem]:
    """The event ``payload`` holds, or its problems (at least one)."""
    try:
        return msgspec.convert(payload, Event)
    except (msgspec.ValidationError, UnicodeEncodeError) as exc:
        return event_problems(payload) or [_located(exc, "")]


def first_problem(payload: dict[str, Any], exc: Exception) -> str:
    """``"<path>: <message>"`` of the first problem of ``payload``, which ``Event`` refused with ``exc``."""
    path, message = (event_problems(payload) or [_located(exc, "")])[0]
    return f"{path}: {message}"


def unwritable_text(payload: dict[str, Any]) -> Problem | None:
    """The first string of ``payload`` holding a lone UTF-16 surrogate, which no UTF-8 store can hold.

    Only ``json.loads`` output can hold one (msgspec refuses them while reading), and msgspec cannot
    compare such a string with a field name or an enum value (it raises UnicodeEncodeError): so first.
    """
    entries = [(shown_key(k), k, v) for k, v in payload.items()]
    context = payload.get("context")
    if isinstance(context, dict):
        entries += [(f"context.{shown_key(k)}", k, v) for k, v in context.items()]
    for path, key, value in entries:
        for text in (key, value):
            if isinstance(text, str) and not text.isascii() and _SURROGATE.search(text):
                return path, "must be valid Unicode text (a lone UTF-16 surrogate is not)"
    return None


def event_problems(payload: dict[str, Any]) -> list[Problem]:
    """Every field-level problem of ``payload`` (an object), or the first cross-field one; [] if valid."""
    text = unwritable_text(payload)
    if text is not None:
        return [text]
    problems: list[Problem] = [(shown_key(key), "not a field of the event contract (unknown fields are refused)")
                               for key in payload if key not in _FIELDS]
    for name, info in _FIELDS.items():
        if name not in payload:
            if info.required:
                problems.append((name, "field required"))
            continue
        try:
            msgspec.convert(payload[name], info.type)
        except msgspec.ValidationError as exc:
            problems.append(_context_entry(payload[name]) if name == "context" and _in_entry(exc)
                            else _located(exc, name))
    if problems:
        return problems
    # Each field is fine alone: what is left are the rules of Event.__post_init__ (id characters, ISO
    # times, purchase-only fields, context.category), which name their field in the message.
    try:
        msgspec.convert(payload, Event)
    except msgspec.ValidationError as exc:
        return [_located(exc, "")]
    return []


def _in_entry(exc: msgspec.ValidationError) -> bool:
    text = str(exc)  # msgspec's paths for "some value of this dict" and "some key of it"
    return "`$[...]" in text or "`key` in `$" in text


def _context_entry(context: dict[str, Any]) -> Problem:
    """The first context entry msgspec refuses, named by its key."""
    for key, value in context.items():
        try:
            msgspec.convert(key, ContextKey)
        except msgspec.ValidationError as exc:
            return "context", f"key {shown_key(key)!r}: {_safe(str(exc))}"
        try:
            msgspec.convert(value, ContextValue)
        except msgspec.ValidationError as exc:
            return _located(exc, f"context.{shown_key(key)}")
    return "context", "invalid"


def _located(exc: Exception, field: str) -> Problem:
    """(path, message) of a msgspec error raised for ``field`` (empty: for the whole event)."""
    message, found, at = str(exc).partition(" - at `$")
    path = (field + (at.removesuffix("`") if found else "")).lstrip(".")
    if not path:
        name, sep, rest = message.partition(": ")
        if sep and name.split(".")[0] in _FIELDS:  # raised by Event.__post_init__: "<path>: <message>"
            path, message = name, rest
    return (path or "event"), _safe(message)


def _safe(text: str) -> str:
    """``text`` without control characters or lone surrogates (msgspec quotes refused enum values)."""
    text = text if text.isprintable() else ascii(text)[1:-1]
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."
