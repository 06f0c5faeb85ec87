"""Two small Faust adjustments that halve its per-message CPU cost (measured: ~55 → ~28 µs/message).

Faust's consumer loop (``Consumer._drain_messages``) hands every message to the conductor with
``await self.wait_first(callback(message), self.suspend_flow.wait())`` so that a callback blocked on a
full stream buffer is abandoned when a rebalance suspends the flow. ``wait_first`` wraps both awaitables
in tasks and waits on them -- two tasks, a cancellation and an ``asyncio.wait`` per message, most of
Faust's cost at thousands of messages per second. :class:`FastConsumer` keeps those semantics but
first runs the callback coroutine one step by hand: when it finishes without blocking (the common case:
the buffer has room) nothing else is needed; only when it blocks is it wrapped in a task and raced
against the suspend flag exactly as before. The loop is otherwise Faust 0.11-0.15's, line for line.
The upstream functions copied or overridden here are pinned by a hash of their source
(tests/unit/stream_processors/test_faust_fast_upstream.py) and faust-streaming by an upper bound
(pyproject.toml): an upgrade that changes one fails that test, naming what to re-check here.

:class:`RawSchema` hands the raw bytes over without Faust's codec registry, and
:class:`QuietMonitor` drops Faust's per-message statistics (they feed its web stats page, which the
worker disables; the worker exports its own Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import faust
from faust.sensors.monitor import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode import Service

from stream_processors.faust_batch import BatchHandler, drain_batches

log = logging.getLogger("streamrec.worker")


@types.coroutine
def finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, None, Any]:
    """Drive ``coro`` to completion after it has been stepped once by hand and yielded ``pending``.

    Re-yields what the coroutine yields to the task running this (asyncio futures or ``None``), resumes
    it, and forwards exceptions thrown in (cancellation) to it.
    """
    while True:
        try:
            yield pending
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            pending = coro.send(None)
        except StopIteration as stop:
            return stop.value


class FastConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer with a cheaper hand-off of each message (see the module docstring)."""

    async def _deliver(self, message: Any) -> None:
        awaitable = self.callback(message)
        if not isinstance(awaitable, types.CoroutineType):
            await self.wait_first(awaitable, self.suspend_flow.wait())
            return
        coro = cast(Coroutine[Any, Any, Any], awaitable)
        try:
            pending = coro.send(None)
        except StopIteration:
            return  # delivered without blocking
        task = asyncio.ensure_future(finish(coro, pending))
        await self.wait_first(task, self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - exercised by the worker tests
        app = cast(WorkerApp, self.app)
        if app.batch_handler is not None:  # batch delivery (faust_batch.py): no per-message path at all
            await drain_batches(self, fetcher, app.batch_handler, app.batch_max_records, app.batch_within_s)
            return
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self._deliver
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await deliver(message)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class FastTransport(aiokafka_driver.Transport):
    Consumer = FastConsumer


class QuietMonitor(Monitor):
    """A monitor that keeps no per-message statistics."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None


class RawSchema(faust.Schema):
    """Keys and values as the bytes Kafka delivered -- what the ``raw`` codec gives, without a trip
    through Faust's serializer registry for every message (validation is the worker's own, in decode.py)."""

    def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class WorkerApp(faust.App):
    """``faust.App`` using :class:`FastTransport` for ``kafka://`` brokers, with a bounded shutdown.

    Faust's stop waits until every event handed to an agent is acknowledged; a batch retrying while
    Redis is away would hold the worker up for as long as Redis stays away. On stop, :attr:`stopping`
    tells the agent to abandon such a batch (every attempt is one MULTI/EXEC, so nothing of it is
    written; its events are redelivered to whoever owns the partition next), Faust's own stop gets half
    the grace period, and a watchdog ends the process when the grace period is over.
    """

    stopping: bool = False
    shutdown_grace_s: float = 10.0
    # Set by the worker for batch delivery (stream_processors/faust_batch.py); None: Faust's streams.
    batch_handler: BatchHandler | None = None
    batch_max_records: int = 4_000
    batch_within_s: float = 0.1  # the app sets Settings.worker_batch_within_s

    def _new_transport(self) -> Any:
        return FastTransport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        self.stopping = True
        watchdog = threading.Timer(self.shutdown_grace_s, _force_exit, args=(self.shutdown_grace_s,))
        watchdog.daemon = True
        watchdog.start()
        try:
            await asyncio.wait_for(super().on_stop(), self.shutdown_grace_s / 2)
        except TimeoutError:
            log.warning("streams did not finish within %.1fs of the stop: stopping without them",
                        self.shutdown_grace_s / 2)


def _force_exit(grace_s: float) -> None:
    log.error("worker still stopping %.1fs after the stop signal: exiting now (no batch is half-written: "
              "each one is a single MULTI/EXEC)", grace_s)
    logging.shutdown()
    os._exit(1)
