"""`streamrec dead-letters`: argument parsing, reading a dead letter's headers, terminal-safe output, refusals."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from ops.dead_letter_replay import refusal
from ops.dead_letters_cli import UsageError, parse_offsets, parse_since, render_table
from streamrec.dead_letter_format import (
    DETAIL,
    REASON,
    REJECTED_AT,
    SOURCE,
    SOURCE_TS,
    TRUNCATED,
    Letter,
    preview,
    printable,
)
from streamrec.kafka_io import Record

NOW = 1_800_000_000_000


def letter(source: str | None = "t.clicks:1:10", value: bytes = b'{"a":1}', **extra: str) -> Letter:
    headers: list[tuple[str, bytes | None]] = [(REASON, b"apply_failed"), (DETAIL, b"ValueError: no"),
                                               (SOURCE_TS, b"1000"), (REJECTED_AT, str(NOW).encode())]
    if source is not None:
        headers.append((SOURCE, source.encode()))
    headers += [(k.replace("_", "-"), v.encode()) for k, v in extra.items()]
    return Letter.of(Record("t.dead-letter", 2, 7, b"u1", value, NOW + 5, tuple(headers)))


@pytest.mark.parametrize(("text", "back_ms"), [("90s", 90_000), ("30m", 1_800_000), ("1h", 3_600_000),
                                                ("1.5h", 5_400_000), ("2d", 172_800_000), ("1w", 604_800_000)])
def test_since_durations(text: str, back_ms: int) -> None:
    assert parse_since(text, NOW) == NOW - back_ms


def test_since_iso_times_and_errors() -> None:
    assert parse_since("2027-01-15T08:00:00+00:00", NOW) == int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(UsageError, match="duration"):
        parse_since("yesterday", NOW)


def test_offsets_need_their_partition_unless_there_is_one() -> None:
    assert parse_offsets("0:12, 3:15,0:12", 4) == {(0, 12), (3, 15)}
    assert parse_offsets("12,15", 1) == {(0, 12), (0, 15)}
    with pytest.raises(UsageError, match="PARTITION:OFFSET"):
        parse_offsets("12", 4)
    for bad in ("a:1", "1:-2", ","):
        with pytest.raises(UsageError):
            parse_offsets(bad, 4)


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("ok é 日本") == "ok é 日本"
    assert printable("\x1b[2J\x07\x00\u202e\u2028\x7f\x9b") == "\\x1b[2J\\x07\\x00\\u202e\\u2028\\x7f\\x9b"
    assert printable("abcdef", 3) == "abc…"
    assert printable("\x1b" * 5, 9) == "\\x1b\\x1b…"  # never cuts an escape in half


def test_preview_of_bytes() -> None:
    assert preview(None) == "(null)"
    assert preview(b'{"c":"\xff\xc3(\x1b"}') == '{"c":"\\xff\\xc3(\\x1b"}'
    assert preview("\ud83d".encode("utf-8", "surrogatepass")) == "\\xed\\xa0\\xbd"
    big = preview(b"y" * 900_000, 120)
    assert big == "y" * 120 + "…"


def test_letter_reads_its_headers() -> None:
    x = letter(streamrec_exception="ValueError")
    assert (x.where, x.reason, x.detail, x.source) == ("2:7", "apply_failed", "ValueError: no", ("t.clicks", 1, 10))
    assert x.truncated_from is None and x.dead_lettered_at_ms == NOW
    d = x.as_dict()
    assert d["source"] == {"topic": "t.clicks", "partition": 1, "offset": 10}
    assert d["headers"]["streamrec-exception"] == "ValueError"  # any streamrec-* header is shown
    assert d["dead_lettered_at"] == "2027-01-15T08:00:00.000Z" and d["key"] == "u1"
    assert letter(source="garbage").source is None
    assert Letter.of(Record("t", 0, 0, None, None, 5)).dead_lettered_at_ms == 5  # no headers at all


def test_refusals() -> None:
    partitions = {"t.clicks": 4, "t.dead-letter": 4}
    assert refusal(letter(), "t.dead-letter", partitions) is None
    assert "truncated" in str(refusal(letter(value=b"y" * 10, **{"streamrec-truncated-from": "2000000"}),
                                      "t.dead-letter", partitions))
    assert TRUNCATED == "streamrec-truncated-from"
    assert "unknown" in str(refusal(letter(source=None), "t.dead-letter", partitions))
    assert "itself" in str(refusal(letter(source="t.dead-letter:0:1"), "t.dead-letter", partitions))
    assert "does not exist" in str(refusal(letter(source="t.gone:0:1"), "t.dead-letter", partitions))
    assert "partition t.clicks:9" in str(refusal(letter(source="t.clicks:9:1"), "t.dead-letter", partitions))


def test_table_is_one_safe_line_per_letter() -> None:
    out = io.StringIO()
    render_table([letter(value=b"\x1b]0;pwned\x07" + b"z" * 500), letter()], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["LETTER", "DEAD-LETTERED-AT", "REASON", "SOURCE", "DETAIL", "VALUE"]
    assert len(lines) == 3 and "\x1b" not in out.getvalue()
    assert lines[1].split()[:4] == ["2:7", "2027-01-15T08:00:00.000Z", "apply_failed", "t.clicks:1:10"]
    assert lines[1].endswith("…") and len(lines[1]) < 300
