"""The dead-letter topic: invalid events, byte for byte, with the reason in headers.

A dead letter is the rejected record's original key and value, unchanged (so a fixed copy can simply
be produced again), on ``settings.topic_dead_letter``, with these headers (UTF-8):

=============================  ==========================================================
``streamrec-reason``           reason code: ``empty``, ``oversized``, ``bad_json``, ``not_object``,
                               ``invalid_field``, ``future_timestamp``, ``undecodable``,
                               ``apply_failed``
``streamrec-detail``           human-readable detail (at most 500 characters)
``streamrec-source``           ``topic:partition:offset`` of the original record
``streamrec-source-ts``        the original record's Kafka timestamp (epoch ms)
``streamrec-dead-lettered-at`` when the worker rejected it (epoch ms)
``streamrec-truncated-from``   only on values over 900,000 bytes, cut to that: the original size
``streamrec-exception``        only for ``apply_failed``: the exception's type (the detail has
                               ``Type: message``)
=============================  ==========================================================

Reason ``apply_failed`` is an event that passed validation but could not be applied (see the failure
policy in :mod:`.processor`); replay it with ``streamrec dead-letters replay`` once the cause is fixed.

Delivery is at least once: the worker waits for the broker's acknowledgement before it records the
batch's offsets, so a crash in between can repeat a dead letter but never lose one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from stream_processors.decode import DeadLetter
from streamrec.dead_letter_format import DETAIL, EXCEPTION, REASON, REJECTED_AT, SOURCE, SOURCE_TS, TRUNCATED
from streamrec.events import now_ms
from streamrec.kafka_io import EventProducer, KafkaUnavailable
from streamrec.settings import Settings

# The header names are shared with `streamrec dead-letters`: see streamrec.dead_letter_format.
# Kafka's default message size limit is 1 MB; a record that big (>100x the event limit) is kept in part
# rather than failing the batch for ever.
MAX_LETTER_BYTES = 900_000


def headers_of(letter: DeadLetter, at_ms: int) -> list[tuple[str, str | bytes | None]]:
    """The headers a dead letter carries (see the module docstring)."""
    rec = letter.record
    headers: list[tuple[str, str | bytes | None]] = [
        (REASON, letter.reason.encode()),
        (DETAIL, letter.detail.encode("utf-8", "replace")),
        (SOURCE, f"{rec.topic}:{rec.partition}:{rec.offset}".encode()),
        (SOURCE_TS, str(rec.timestamp_ms).encode()),
        (REJECTED_AT, str(at_ms).encode()),
    ]
    if letter.exception:
        headers.append((EXCEPTION, letter.exception.encode("utf-8", "replace")))
    return headers


class DeadLetterProducer:
    """Sends dead letters and waits until the broker has them (raises :class:`KafkaUnavailable` if not)."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.topic = settings.topic_dead_letter
        self.timeout_s = timeout_s
        self._producer = EventProducer(settings, **{"linger.ms": 0, "compression.type": "none"})

    def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        errors: list[Any] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        at = now_ms()
        producer = self._producer.producer
        for letter in letters:
            value, headers = letter.record.value, headers_of(letter, at)
            if value is not None and len(value) > MAX_LETTER_BYTES:
                headers.append((TRUNCATED, str(len(value)).encode()))
                value = value[:MAX_LETTER_BYTES]
            while True:
                try:
                    producer.produce(self.topic, value=value, key=letter.record.key, headers=headers,
                                     on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
        left = self._producer.flush(self.timeout_s)
        if left or errors:
            raise KafkaUnavailable(f"dead letters not delivered to {self.topic}: {left} pending, errors {errors[:3]}")
