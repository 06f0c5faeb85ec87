"""What a dead letter looks like on the dead-letter topic, shared by the worker and ``streamrec dead-letters``.

A dead letter is the rejected record's original key and value, unchanged, with ``streamrec-*`` headers
(UTF-8) saying why and where from; the worker writes them (``stream_processors.dead_letters``), the
CLI reads them (:mod:`ops.dead_letters_cli`). This module holds the header names and reads a
dead letter back from a :class:`~streamrec.kafka_io.Record`; it does no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamrec.kafka_io import Record

PREFIX = "streamrec-"
REASON = "streamrec-reason"
DETAIL = "streamrec-detail"
SOURCE = "streamrec-source"
SOURCE_TS = "streamrec-source-ts"
REJECTED_AT = "streamrec-dead-lettered-at"
TRUNCATED = "streamrec-truncated-from"
EXCEPTION = "streamrec-exception"
# Set by `streamrec dead-letters replay` on the record it produces to the source topic again.
REPLAYED_FROM = "streamrec-replayed-from"

_UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, formatting (bidi), surrogates, unassigned


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe for a terminal: control, formatting and unassigned characters as ``\\xNN``/``\\uNNNN``.

    Cut to ``limit`` characters (of the escaped text), marked with ``…``.
    """
    out: list[str] = []
    size = 0
    for ch in text:
        piece = ch
        if unicodedata.category(ch) in _UNSAFE:
            code = ord(ch)
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
        if limit is not None and size + len(piece) > limit:
            return "".join(out) + "…"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def preview(data: bytes | None, limit: int | None = 120) -> str:
    """Bytes as text for a terminal: UTF-8 where valid, ``\\xNN`` where not, :func:`printable`, cut."""
    if data is None:
        return "(null)"
    # Never decode megabytes to show a line: limit * 4 + 4 bytes are more than ``limit`` characters.
    head = data if limit is None else data[: limit * 4 + 4]
    return printable(head.decode("utf-8", "backslashreplace"), limit)


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC time (``2026-01-02T10:00:03.120Z``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


_SOURCE = re.compile(r"^(?P<topic>[^:]+):(?P<partition>\d+):(?P<offset>\d+)$")


@dataclass(frozen=True)
class Letter:
    """One dead letter read back: where it is on the dead-letter topic, its record and its headers."""

    record: Record
    headers: dict[str, str]  # every header, decoded as UTF-8 (invalid bytes replaced)

    @classmethod
    def of(cls, record: Record) -> Letter:
        """The dead letter that ``record`` (read from the dead-letter topic) is."""
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers}
        return cls(record, headers)

    @property
    def where(self) -> str:
        """``partition:offset`` on the dead-letter topic (what ``replay --offsets`` takes)."""
        return f"{self.record.partition}:{self.record.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get(REASON, "?")

    @property
    def detail(self) -> str:
        return self.headers.get(DETAIL, "")

    @property
    def source(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) of the original record, or None when the header is missing or bad."""
        m = _SOURCE.match(self.headers.get(SOURCE, ""))
        return (m["topic"], int(m["partition"]), int(m["offset"])) if m else None

    @property
    def truncated_from(self) -> int | None:
        """The original value's size when the dead letter holds only its start."""
        return _int(self.headers.get(TRUNCATED)) if TRUNCATED in self.headers else None

    @property
    def dead_lettered_at_ms(self) -> int:
        return _int(self.headers.get(REJECTED_AT)) or self.record.timestamp_ms

    def as_dict(self, value_chars: int = 120) -> dict[str, Any]:
        """JSON-friendly: place, reason, detail, source, times, a value preview and every streamrec-* header."""
        src = self.source
        rec = self.record
        return {
            "letter": self.where, "partition": rec.partition, "offset": rec.offset,
            "reason": self.reason, "detail": self.detail,
            "source": {"topic": src[0], "partition": src[1], "offset": src[2]} if src else None,
            "source_time": iso_ms(_int(self.headers.get(SOURCE_TS))),
            "dead_lettered_at": iso_ms(self.dead_lettered_at_ms),
            "truncated_from": self.truncated_from,
            "key": None if rec.key is None else rec.key.decode("utf-8", "backslashreplace"),
            "value_bytes": None if rec.value is None else len(rec.value),
            "value_preview": preview(rec.value, value_chars),
            "headers": {k: v for k, v in self.headers.items() if k.startswith(PREFIX)},
        }
