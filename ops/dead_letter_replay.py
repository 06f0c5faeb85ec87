"""Re-producing dead letters to their source topic (``streamrec dead-letters replay``).

Each chosen letter's original key and value go back, unchanged, to the topic and partition its
``streamrec-source`` header names, with a ``streamrec-replayed-from`` header (``topic:partition:offset``
of the letter). Replaying is idempotent within ``STREAMREC_DEDUP_WINDOW_S``: the worker skips an event
whose ``event_id`` it already applied. A dead-lettered record can be on the topic twice (dead letters are
at least once), so letters of the same source record are replayed once. Letters that cannot be replayed
faithfully are refused: truncated ones (the original value is not in the topic), and those whose source
is unknown, missing or the dead-letter topic itself.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from confluent_kafka import KafkaError, Message

from streamrec.dead_letter_format import REPLAYED_FROM, Letter, preview, printable
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings

SHOW = 20  # letters listed one per line; after that, a progress line every PROGRESS
PROGRESS = 1000


@dataclass
class Outcome:
    """What a replay did."""

    replayed: Counter[str] = field(default_factory=Counter)  # delivered, per source topic
    chosen: Counter[str] = field(default_factory=Counter)  # queued (or, dry run, would be), per source topic
    refused: int = 0
    repeats: int = 0
    failed: list[str] = field(default_factory=list)


def refusal(letter: Letter, dead_letter_topic: str, partitions: dict[str, int]) -> str | None:
    """Why ``letter`` cannot be replayed faithfully, or None when it can (``partitions``: per topic)."""
    if letter.truncated_from is not None:
        kept = len(letter.record.value or b"")
        return (f"truncated: it keeps {kept:,} of the original {letter.truncated_from:,} bytes, so the original "
                "is not in the topic; produce it again from where it came from")
    src = letter.source
    if src is None:
        return "no valid streamrec-source header: its source topic is unknown"
    topic, partition, _ = src
    if topic == dead_letter_topic:
        return "its source is the dead-letter topic itself"
    if topic not in partitions:
        return f"its source topic {topic} does not exist"
    if partition >= partitions[topic]:
        return f"its source partition {topic}:{partition} does not exist"
    return None


def _produce(producer: Any, letter: Letter, headers: list[tuple[str, bytes]], on_delivery: Any) -> None:
    src = letter.source
    assert src is not None
    while True:
        try:
            producer.produce(src[0], value=letter.record.value, key=letter.record.key, partition=src[1],
                             headers=headers, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def replay(settings: Settings, letters: Iterable[Letter], *, dry_run: bool = False, timeout: float = 10.0,
           out: TextIO = sys.stdout) -> int:
    """Replay ``letters`` (progress on ``out``, refusals on stderr); exit status 0 when all were delivered.

    Raises ``KafkaException`` when Kafka does not answer before anything is produced.
    """
    dlq = settings.topic_dead_letter
    producer = EventProducer(settings, **{"linger.ms": 5}).producer
    partitions = {t: len(md.partitions) for t, md in producer.list_topics(timeout=timeout).topics.items()}
    done, seen = Outcome(), set()
    verb = "would replay" if dry_run else "replaying"

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            done.replayed[str(msg.topic())] += 1
        else:
            done.failed.append(f"{msg.topic()}: {err.str()}")

    for letter in letters:
        src = letter.source
        if src is not None and src in seen:
            done.repeats += 1
            continue
        why = refusal(letter, dlq, partitions)
        if why is not None:
            done.refused += 1
            if done.refused <= SHOW:
                print(f"streamrec: refused {letter.where} ({printable(letter.reason, 40)}, from "
                      f"{printable(letter.headers.get('streamrec-source', '?'), 80)}): {why}", file=sys.stderr)
            continue
        assert src is not None
        seen.add(src)
        n = sum(done.chosen.values()) + 1
        if n <= SHOW:
            print(f"{verb} {letter.where} {printable(letter.reason, 40)} -> {src[0]}:{src[1]} (was offset {src[2]}) "
                  f"key={preview(letter.record.key, 40)}", file=out, flush=True)
        elif n % PROGRESS == 0:
            print(f"... {n} so far", file=out, flush=True)
        done.chosen[src[0]] += 1
        if not dry_run:
            _produce(producer, letter, [(REPLAYED_FROM, f"{dlq}:{letter.where}".encode())], delivered)
    left = 0 if dry_run else int(producer.flush(max(timeout, 30.0)))
    return _summary(done, dry_run, left, out)


def _summary(done: Outcome, dry_run: bool, left: int, out: TextIO) -> int:
    counts = done.chosen if dry_run else done.replayed
    total = sum(counts.values())
    per_topic = ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "none"
    print(f"{'would replay' if dry_run else 'replayed'} {total} dead letter{'s' * (total != 1)} "
          f"to their source topics: {per_topic}", file=out)
    if done.repeats:
        print(f"skipped {done.repeats} repeated dead letter(s) of a source record already chosen", file=out)
    if done.refused:
        print(f"streamrec: refused {done.refused} dead letter(s) (reasons above)", file=sys.stderr)
    if left or done.failed:
        print(f"streamrec: {left + len(done.failed)} not delivered ({'; '.join(done.failed[:3]) or 'timed out'}); "
              "run the same replay again (replaying is idempotent)", file=sys.stderr)
    out.flush()
    return 1 if done.refused or left or done.failed else 0
