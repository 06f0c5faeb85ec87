"""streamrec.partitioner.partition_for names the partition Kafka gave each keyed record of our producers."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

from online_api.collector import Collector
from streamrec.events import Event, EventType, decode_event, now_ms
from streamrec.kafka_io import EventProducer, read_all
from streamrec.partitioner import partition_for
from streamrec.settings import Settings


def _user_ids(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    made = {f"user-{i}" for i in range(n // 2)}
    made |= {str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n // 4)}
    alphabet = "abcXYZ019-_.:@ éüß用户🙂"
    while len(made) < n:
        made.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 128))))
    return sorted(made)


def test_the_event_producer_puts_each_user_where_partition_for_says(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=7)
    users = _user_ids(2_000, seed=3)
    producer = EventProducer(settings)
    for user in users:
        producer.send_raw(settings.topic_clicks, user.encode(), b"{}")
    assert producer.flush(30) == 0

    records = list(read_all(settings, [settings.topic_clicks]))
    assert len(records) == len(users)
    assert len({r.partition for r in records}) == 7
    wrong = [(r.key, r.partition) for r in records if r.key is None or partition_for(r.key, 7) != r.partition]
    assert wrong == []


def test_the_collector_puts_each_user_where_partition_for_says(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(partitions=12)
    users = _user_ids(1_200, seed=11)
    events = [Event(event_id=uuid.uuid4(), user_id=u, item_id="sku-1", type=EventType.CLICK, ts=now_ms())
              for u in users]
    collector = Collector(settings)
    collector.start()
    try:
        asyncio.run(collector.send(events))
    finally:
        collector.stop()

    records = list(read_all(settings, [settings.topic_clicks]))
    assert sorted(decode_event(r.value).user_id for r in records if r.value) == users
    assert len({r.partition for r in records}) == 12
    for r in records:
        assert r.key is not None and partition_for(r.key.decode(), 12) == r.partition, r.key
