"""`streamrec dead-letters list|replay`: what is on the dead-letter topic, and re-sending chosen letters.

``list`` reads the dead-letter topic (``STREAMREC_TOPIC_DEAD_LETTER``) with a bounded read, from
``--since`` (found with the broker's time index) or the beginning up to its end when the command starts,
and prints the most recent letters: where each is (``partition:offset``, what ``replay --offsets``
takes), when it was dead-lettered, its reason, its source record and a terminal-safe value preview.
``replay`` re-produces the chosen letters' original key and value to their source topic and partition
(:mod:`ops.dead_letter_replay`). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TextIO

from confluent_kafka import KafkaException

from streamrec.dead_letter_format import Letter, iso_ms, preview, printable
from streamrec.kafka_io import KafkaUnavailable, end_offsets, offsets_for_times, read_range
from streamrec.settings import Settings

COLUMNS = ("LETTER", "DEAD-LETTERED-AT", "REASON", "SOURCE", "DETAIL", "VALUE")
DETAIL_CHARS = 80
VALUE_CHARS = 120
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class UsageError(ValueError):
    """An argument that cannot be used (printed as one line, exit status 2)."""


class NotThere(LookupError):
    """The topic or a letter asked for does not exist (printed as one line, exit status 1)."""


def parse_since(text: str, now_ms: int) -> int:
    """``--since``: a duration back from now (``90s``, ``30m``, ``1h``, ``2d``, ``1w``) or an ISO 8601 time.

    Returns epoch milliseconds; an ISO time without a zone is local time.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if m:
        return now_ms - int(float(m[1]) * _UNITS[m[2]] * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r}: give a duration (30m, 1h, 2d) or an ISO time "
                         "(2026-01-02T10:00)") from None
    return int(when.astimezone().timestamp() * 1000)


def parse_offsets(text: str, partitions: int) -> set[tuple[int, int]]:
    """``--offsets``: ``PARTITION:OFFSET`` items (or bare offsets when the topic has one partition)."""
    out: set[tuple[int, int]] = set()
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = re.fullmatch(r"(?:(\d+):)?(\d+)", item)
        if not m:
            raise UsageError(f"--offsets: {item!r} is not PARTITION:OFFSET")
        if m[1] is None and partitions != 1:
            raise UsageError(f"--offsets: {item!r} needs its partition (the dead-letter topic has {partitions}): "
                             "give PARTITION:OFFSET as in the LETTER column of `streamrec dead-letters list`")
        out.add((int(m[1] or 0), int(m[2])))
    if not out:
        raise UsageError("--offsets: no offsets given")
    return out


def dead_letter_ends(settings: Settings, timeout: float) -> dict[tuple[str, int], int]:
    """The dead-letter topic's high watermarks (raises :class:`NotThere` when the topic does not exist)."""
    end = end_offsets(settings, [settings.topic_dead_letter], timeout)
    if not end:
        raise NotThere(f"topic {settings.topic_dead_letter} does not exist (STREAMREC_TOPIC_DEAD_LETTER)")
    return end


def scan(settings: Settings, since_ms: int | None, timeout: float) -> Iterator[Letter]:
    """Every dead letter from ``since_ms`` (or the beginning) to the topic's end now, partition by partition."""
    end = dead_letter_ends(settings, timeout)
    start = {} if since_ms is None else offsets_for_times(settings, [settings.topic_dead_letter], since_ms, timeout)
    for record in read_range(settings, start, end, timeout):
        if since_ms is None or record.timestamp_ms >= since_ms:
            yield Letter.of(record)


def at_offsets(settings: Settings, wanted: set[tuple[int, int]], timeout: float) -> Iterator[Letter]:
    """The dead letters at these ``(partition, offset)``; raises :class:`NotThere` for any that is missing."""
    topic = settings.topic_dead_letter
    ends = dead_letter_ends(settings, timeout)
    start: dict[tuple[str, int], int] = {}
    end: dict[tuple[str, int], int] = {}
    for p, o in wanted:
        start[(topic, p)] = min(o, start.get((topic, p), o))
        end[(topic, p)] = min(max(o + 1, end.get((topic, p), 0)), ends.get((topic, p), 0))
    found = [Letter.of(r) for r in read_range(settings, start, end, timeout) if (r.partition, r.offset) in wanted]
    missing = wanted - {(x.record.partition, x.record.offset) for x in found}
    if missing:
        raise NotThere("no dead letter at " + ", ".join(f"{p}:{o}" for p, o in sorted(missing))
                         + f" in {topic} (past its end, or removed by retention)")
    yield from found


def render_table(letters: Sequence[Letter], out: TextIO) -> None:
    """One line per letter, columns padded; every field is made safe for a terminal."""
    rows = [COLUMNS]
    for x in letters:
        src = x.source
        rows.append((x.where, iso_ms(x.dead_lettered_at_ms) or "-", printable(x.reason, 40),
                     f"{src[0]}:{src[1]}:{src[2]}" if src else "-", printable(x.detail, DETAIL_CHARS) or "-",
                     preview(x.record.value, VALUE_CHARS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    for r in rows:
        out.write("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() + "\n")


def _newest(letters: Iterable[Letter], limit: int) -> list[Letter]:
    """The ``limit`` most recently dead-lettered, oldest first (memory bounded by ``limit``)."""
    newest = heapq.nlargest(limit, letters, key=lambda x: (x.record.timestamp_ms, x.record.partition, x.record.offset))
    return newest[::-1]


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """``streamrec dead-letters list``."""
    since = None if args.since is None else parse_since(args.since, int(time.time() * 1000))
    reasons = set(args.reason or [])
    seen: Counter[str] = Counter()

    def matching() -> Iterator[Letter]:
        for x in scan(settings, since, args.timeout):
            seen[x.reason] += 1
            if not reasons or x.reason in reasons:
                yield x

    shown = _newest(matching(), args.limit)
    total = sum(n for r, n in seen.items() if not reasons or r in reasons)
    topic = settings.topic_dead_letter
    if args.json:
        print(json.dumps({"topic": topic, "since": iso_ms(since), "reasons": dict(seen.most_common()),
                          "matching": total, "shown": len(shown),
                          "dead_letters": [x.as_dict(VALUE_CHARS) for x in shown]}))
        return 0
    if shown:
        render_table(shown, sys.stdout)
    which = f" with reason {', '.join(sorted(reasons))}" if reasons else ""
    when = f" since {iso_ms(since)}" if since is not None else ""
    counts = ", ".join(f"{printable(r, 40)} {n}" for r, n in seen.most_common()) or "none"
    print(f"{len(shown)} of {total} dead letters{which}{when} in {topic} (by reason: {counts})")
    if shown:
        some = ",".join(x.where for x in shown[-5:]) + (",..." if len(shown) > 5 else "")
        print(f"after a fix, replay with: streamrec dead-letters replay --offsets {some}  "
              "(or --reason REASON [--since WHEN])")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``dead-letters`` subcommands and their options."""
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="recent dead letters: reason, detail, source record, time, value preview",
                        description="Reads the dead-letter topic (a bounded read) and prints the most recent "
                        "letters, oldest first; LETTER is the partition:offset that `replay --offsets` takes.")
    ls.add_argument("--reason", action="append", metavar="REASON",
                    help="only this reason (bad_json, invalid_field, apply_failed, ...); repeatable")
    ls.add_argument("--since", metavar="WHEN", help="only letters from this far back: 30m, 1h, 2d or an ISO time")
    ls.add_argument("--limit", type=int, default=50, help="show at most this many, the most recent (default 50)")
    ls.add_argument("--json", action="store_true", help="print one JSON object, every streamrec-* header included")
    ls.set_defaults(handler=run_list)
    rp = sub.add_parser("replay", help="re-produce chosen dead letters to their source topic after a fix",
                        description="Re-produces each chosen letter's original key and value to its source "
                        "topic and partition (the streamrec-source header). Replaying twice is harmless "
                        "within STREAMREC_DEDUP_WINDOW_S: the worker skips event ids it already applied. "
                        "Truncated letters are refused: their original is not in the topic.")
    which = rp.add_mutually_exclusive_group(required=True)
    which.add_argument("--reason", action="append", metavar="REASON", help="every letter with this reason")
    which.add_argument("--offsets", metavar="LIST",
                       help="these letters: PARTITION:OFFSET,... as in list's LETTER column")
    rp.add_argument("--since", metavar="WHEN", help="with --reason: only letters from this far back (30m, 1h, ...)")
    rp.add_argument("--dry-run", action="store_true", help="print what would be replayed, produce nothing")
    rp.set_defaults(handler=run_replay)
    for q in (ls, rp):
        q.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each Kafka answer")


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """``streamrec dead-letters replay``."""
    from ops.dead_letter_replay import replay

    if args.offsets is not None and args.since is not None:
        raise UsageError("--since goes with --reason (--offsets names the letters exactly)")
    if args.offsets is not None:
        partitions = len(dead_letter_ends(settings, args.timeout))
        letters = at_offsets(settings, parse_offsets(args.offsets, partitions), args.timeout)
    else:
        since = None if args.since is None else parse_since(args.since, int(time.time() * 1000))
        letters = (x for x in scan(settings, since, args.timeout) if x.reason in set(args.reason))
    return replay(settings, letters, dry_run=args.dry_run, timeout=args.timeout)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The ``dead-letters`` subcommand: one clear line and exit 1 when Kafka does not answer."""
    try:
        return int(args.handler(args, settings))
    except UsageError as exc:
        print(f"streamrec: {exc}", file=sys.stderr, flush=True)
        return 2
    except NotThere as exc:
        print(f"streamrec: {exc.args[0]}", file=sys.stderr, flush=True)
        return 1
    except (KafkaUnavailable, KafkaException) as exc:
        detail = " ".join(str(exc).split())
        print(f"streamrec: kafka at {settings.kafka_bootstrap} did not answer: {detail} "
              "(is the stack up? run: streamrec stack up)", file=sys.stderr, flush=True)
        return 1
