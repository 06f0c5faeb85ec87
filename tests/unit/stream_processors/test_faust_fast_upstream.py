"""stream_processors/faust_fast.py and faust_batch.py copy, override or rely on these faust-streaming internals:
pinned by source hash.

pyproject.toml bounds faust-streaming below the next minor; within it, a patch release that touches one of
these still fails here, naming the override to re-check. (``WorkerApp.on_stop`` and the monitor's
``on_*`` methods are public hooks, documented for overriding: not pinned.)
"""

from __future__ import annotations

import pytest

from tests.helpers.upstream import Pin, check

PINS = [
    Pin("faust.transport.consumer:Consumer._drain_messages",
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        "stream_processors/faust_fast.FastConsumer._drain_messages (a copy of it, line for line) and "
        "FastConsumer._deliver (its wait_first hand-off of each message)", "faust-streaming", "0.15.3"),
    Pin("faust.transport.consumer:Consumer._wait_next_records",
        "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6",
        "stream_processors/faust_batch._collect (calls it for each fetch, filters by its active partitions)",
        "faust-streaming", "0.15.3"),
    Pin("faust.transport.consumer:Consumer.ack",
        "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
        "stream_processors/faust_batch._acknowledge (fills the same _acked/_acked_index/_n_acked under ack_lock)",
        "faust-streaming", "0.15.3"),
    Pin("faust.transport.consumer:Consumer._new_offset",
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
        "stream_processors/faust_batch._acknowledge (the commit reads the acked lists it fills)",
        "faust-streaming", "0.15.3"),
    Pin("faust.transport.consumer:Consumer._add_gap",
        "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
        "stream_processors/faust_batch._fresh (records offset gaps as the drain loop does)", "faust-streaming",
        "0.15.3"),
    Pin("faust.app.base:App._new_transport",
        "42db531312dd776fc3937154a32f19eeb9ad7d4ebc2722a92d081a2d271baea1",
        "stream_processors/faust_fast.WorkerApp._new_transport (returns FastTransport)", "faust-streaming", "0.15.3"),
    Pin("faust.serializers.schemas:Schema.compile",
        "d46eec5ce3195b2c6752cb860a10946cee66ddf6a955f2ea44ac1568c0ecb9ad",
        "stream_processors/faust_fast.RawSchema.compile (its decode calls app.create_event as upstream's does)",
        "faust-streaming", "0.15.3"),
]


@pytest.mark.parametrize("pin", PINS, ids=[p.target for p in PINS])
def test_patched_faust_internals_are_unchanged_upstream(pin: Pin) -> None:
    check(pin)


def test_the_aiokafka_consumer_runs_the_pinned_loop_and_has_no_deliver_of_its_own() -> None:
    """FastConsumer overrides the aiokafka driver's consumer: the loop it replaces must be the pinned one,
    and ``_deliver`` must be ours alone (an upstream ``_deliver`` would be silently overridden)."""
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer

    assert AiokafkaConsumer._drain_messages is Consumer._drain_messages, (
        "faust.transport.drivers.aiokafka.Consumer now has its own _drain_messages: re-check "
        "stream_processors/faust_fast.FastConsumer._drain_messages against it and pin it here")
    assert not hasattr(AiokafkaConsumer, "_deliver"), (
        "faust's consumer now has a _deliver: stream_processors/faust_fast.FastConsumer._deliver overrides it; "
        "re-check both")
