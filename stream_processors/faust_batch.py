"""Batch delivery: Faust's consumer hands whole batches of records to the worker, acknowledged per batch.

Faust's own path moves every message through a ``ConsumerMessage``, the conductor, a channel queue, the
stream iterator, ``take_events``' buffer and one ``ack`` each -- about 20 µs of CPU per message, more than
the rest of the worker's Python per event. The worker needs none of it: it wants a list of records,
applies them to Redis in one transaction and then acknowledges them all.

:func:`drain_batches` replaces the consumer's drain loop when the app has a batch handler. It collects
the records of successive fetches (up to ``max_records``, or ``within_s`` after the oldest was produced), skips
records below each partition's read offset and records the offset gaps exactly as Faust's loop does,
awaits the handler, and then marks the batch's offsets acknowledged in Faust's own bookkeeping (the same
lists and counters ``Consumer.ack`` fills), so Faust's commit timer commits them to Kafka as before.
Everything else stays Faust's: group membership, rebalances (the flow is suspended while one runs), the
commit timer, heartbeats. Exactly-once does not depend on any of this (the offsets stored in Redis make a
redelivery harmless); the Kafka commit only saves re-reading.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types.tuples import ack_lock
from mode import Service

from streamrec.kafka_io import Record

LATE_FOLLOW_S = 0.02  # see _collect
BatchHandler = Callable[[list[Record]], Awaitable[bool]]  # True: applied (acknowledge); False: stopping


async def drain_batches(consumer: Any, fetcher: Any, handler: BatchHandler, max_records: int,
                        within_s: float) -> None:
    """The consumer's drain loop for batch delivery (run in place of ``Consumer._drain_messages``)."""
    consumer_should_stop = cast(Service, consumer)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(CONSUMER_FETCHING)
            taken = await _collect(consumer, max_records, within_s)
            consumer.diag.unset_flag(CONSUMER_FETCHING)
            if not taken:
                continue
            records = [Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp or 0)
                       for _, recs in taken for r in recs]
            if not await handler(records):
                return  # stopping: the batch was abandoned unwritten and is not acknowledged
            await _acknowledge(consumer, taken)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    finally:
        consumer.diag.unset_flag(CONSUMER_FETCHING)


async def _collect(consumer: Any, max_records: int, within_s: float) -> list[tuple[Any, Sequence[Any]]]:
    """Records of successive fetches, per partition in offset order, until ``max_records`` or ``within_s``
    after the oldest record taken was produced (or a stop)."""
    taken: list[tuple[Any, Sequence[Any]]] = []
    n = 0
    deadline: float | None = None
    generation: int | None = None
    while n < max_records:
        timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        records, active = await consumer._wait_next_records(timeout)
        if records is None or consumer.should_stop:
            break  # stopping: nothing taken is acknowledged, so all of it is delivered again
        if generation is not None and consumer.app.consumer_generation_id != generation:
            # A rebalance since the batch began sought every partition back to its committed offset, so the
            # records taken so far (none acknowledged) come again: drop them, as Faust's loop drops messages
            # of an older generation. Never drop the fetch at hand: its records are past the new position.
            taken, n, deadline = [], 0, None
        generation = consumer.app.consumer_generation_id
        for tp, recs in records.items():
            if not recs or (active is not None and tp not in active and tp not in consumer._buffered_partitions):
                continue
            fresh = await _fresh(consumer, tp, recs)
            if fresh:
                taken.append((tp, fresh))
                n += len(fresh)
        if n and deadline is None:
            deadline = time.monotonic() + within_s - _age_s(taken)
            if deadline <= time.monotonic():
                # Late already (the previous batch ran long): the fetcher only asks Kafka for a partition again
                # once its buffered records are taken, so what was produced meanwhile is one fetch away. Wait
                # for that fetch rather than closing on the buffered remainder alone: otherwise a small batch,
                # all overhead, alternates with a large one, and the worker falls further behind.
                deadline = time.monotonic() + min(LATE_FOLLOW_S, within_s)
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not records:
            await asyncio.sleep(0)
    return taken


def _age_s(taken: list[tuple[Any, Sequence[Any]]]) -> float:
    """How long ago the oldest record taken was produced (its Kafka timestamp; 0 when unknown or ahead).

    A batch closes ``within_s`` after its oldest record was produced, not after it was fetched: records
    that waited in the consumer's buffer while the previous batch was applied have used up part of their
    wait already, so under load no event waits much more than ``within_s`` for its batch to fill.
    """
    oldest = min((recs[0].timestamp for _, recs in taken if recs[0].timestamp and recs[0].timestamp > 0),
                 default=None)
    return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)


async def _fresh(consumer: Any, tp: Any, recs: Sequence[Any]) -> Sequence[Any]:
    """``recs`` from the partition's read offset on, recording any offset gap (as Faust's loop does, so
    the commit can move past offsets Kafka never delivers, such as transaction markers)."""
    r_offset = consumer._read_offset[tp]
    if r_offset is not None and recs[0].offset < r_offset:
        recs = [r for r in recs if r.offset >= r_offset]
        if not recs:
            return recs
    acks = consumer.app.topics.acks_enabled_for(recs[0].topic)
    if acks and r_offset and recs[0].offset - r_offset > 1:
        await consumer._add_gap(tp, r_offset + 1, recs[0].offset)
    if acks and recs[-1].offset - recs[0].offset + 1 != len(recs):  # a gap inside the fetch
        for prev, cur in itertools.pairwise(recs):
            if cur.offset - prev.offset > 1:
                await consumer._add_gap(tp, prev.offset + 1, cur.offset)
    consumer._read_offset[tp] = recs[-1].offset
    return recs


async def _acknowledge(consumer: Any, taken: list[tuple[Any, Sequence[Any]]]) -> None:
    """What ``Consumer.ack`` does for each record, once per partition: the offsets join the acked list that
    Faust's commit reads (records of partitions no longer assigned are left out)."""
    assigned = consumer.assignment()
    with ack_lock:  # the bookkeeping Consumer.ack keeps under this lock
        acked = 0
        for tp, recs in taken:
            if tp not in assigned or not consumer.app.topics.acks_enabled_for(tp.topic):
                continue
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            offsets = [r.offset for r in recs
                       if (committed is None or r.offset >= committed) and r.offset not in index]
            index.update(offsets)
            consumer._acked[tp].extend(offsets)
            acked += len(offsets)
        consumer._n_acked += acked
    commit_every = consumer._commit_every
    if commit_every is not None and consumer._n_acked >= commit_every:
        consumer._n_acked = 0
        await consumer.commit()
