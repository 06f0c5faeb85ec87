"""The event collector's Kafka side: produce with the idempotent producer and await the acks.

A request is answered 202 only after Kafka acknowledged every event of it (acks=all), so an accepted
event is never lost. Waiting is bounded by ``settings.api_produce_timeout_s`` (also librdkafka's
``message.timeout.ms``); while every broker is down the collector answers 503 at once instead of
queueing requests that would time out anyway.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError

from online_api.errors import Unavailable
from streamrec.events import Event
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings

log = logging.getLogger("streamrec.api")


class Collector:
    """Produces events and resolves one asyncio future per event from librdkafka's delivery reports."""

    def __init__(self, settings: Settings) -> None:
        self.timeout_s = settings.api_produce_timeout_s
        self.retry_after_s = max(1, round(self.timeout_s))
        self._producer = EventProducer(settings, **{
            "message.timeout.ms": int(self.timeout_s * 1000),
            "socket.connection.setup.timeout.ms": max(1000, int(self.timeout_s * 1000)),
            "error_cb": self._on_error,
        })
        self._down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread that serves delivery reports (and probes the brokers while they are down)."""
        _ = self._producer.producer  # create it here, not racing between the first request and the thread
        self._thread = threading.Thread(target=self._poll_loop, name="api-kafka-poll", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._producer.flush(flush_timeout_s)

    @property
    def kafka_down(self) -> bool:
        return self._down_since is not None

    async def send(self, events: Sequence[Event]) -> None:
        """Produce ``events`` and return once Kafka acknowledged all of them; :class:`Unavailable` if not."""
        if self._down_since is not None:
            raise Unavailable("the event log (Kafka) is unreachable; retry shortly", retry_after_s=self.retry_after_s)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for event in events:
            fut: asyncio.Future[None] = loop.create_future()
            self._producer.send(event, on_delivery=self._reporter(loop, fut))
            futures.append(fut)
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self.timeout_s + 1.0)
        except (TimeoutError, KafkaDeliveryFailed) as exc:
            log.warning("events not acknowledged by Kafka: %s", exc)
            raise Unavailable("the event log (Kafka) did not acknowledge the events; retry",
                              retry_after_s=self.retry_after_s) from None

    @staticmethod
    def _reporter(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> Any:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            # Runs in whichever thread polls the producer: hand the outcome to the event loop.
            loop.call_soon_threadsafe(_settle, fut, err)
        return on_delivery

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._down_since is None:
                log.warning("all Kafka brokers are down: the collector answers 503 until one is back")
            self._down_since = time.monotonic()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.producer.poll(0.1)
            # Probe at once: the flag can also follow a mere idle disconnect, which a probe clears.
            if self._down_since is not None and self._producer.ping(timeout=1.0):
                log.info("Kafka is reachable again")
                self._down_since = None


class KafkaDeliveryFailed(RuntimeError):
    """Kafka reported a delivery failure for an event."""


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():  # the request already gave up waiting
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaDeliveryFailed(str(err)))
