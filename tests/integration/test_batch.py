"""The batch refit on real Kafka and Redis: simulate → batch run → a consistent version; incremental runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from batch.reader import read_events
from batch.refit import last_run_key, run_refit
from streamrec import simulate
from streamrec.events import Event, decode_event
from streamrec.kafka_io import EventProducer, end_offsets, read_all
from streamrec.settings import Settings
from streamrec.store import RedisStore, from_bytes
from streamrec.store.models import all_user_vectors, current_version, list_versions, load_model


@pytest.fixture
def bsettings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Isolated settings with a small, quick model and a snapshot directory of its own."""
    return make_settings(batch_snapshot_dir=tmp_path / "snapshot", als_factors=16, als_iterations=4)


def produce_sim(settings: Settings, count: int, seed: int, store: simulate.Storefront | None = None) -> list[Event]:
    """``count`` simulated events on the settings' topics; returns them."""
    producer = EventProducer(settings)
    sent: list[Event] = []

    def emit(event: Event) -> None:
        sent.append(event)
        producer.send(event)

    simulate.run(emit, rate=0, count=count, store=store or simulate.Storefront(simulate.SimConfig(seed=seed)))
    assert producer.flush(30) == 0
    return sent


def check_version(store: RedisStore, version: str) -> None:
    """Every part of a version agrees: meta counts, ids, factor shapes, Gram matrices, user vectors.

    (Call it on versions whose users were not re-folded since the fit: XᵀX is the fit's.)
    """
    model = load_model(store, version)
    assert model is not None
    f = model.meta["factors"]
    assert model.meta["version"] == version
    assert model.meta["n_items"] == len(model.item_ids) == model.item_factors.shape[0] == len(set(model.item_ids))
    np.testing.assert_allclose(model.gram, model.item_factors.T @ model.item_factors, rtol=1e-4, atol=1e-4)
    users = all_user_vectors(store, version)
    assert len(users) == model.meta["n_users"]
    assert all(len(v) == f for v in users.values())
    vectors = np.stack(list(users.values()))
    assert np.isfinite(vectors).all()
    user_gram = store.client.get(store.keys.model(version, "user_gram"))
    assert user_gram is not None  # the worker folds new items in with XᵀX
    np.testing.assert_allclose(from_bytes(user_gram, f), vectors.T @ vectors, rtol=1e-3, atol=1e-3)


def test_simulated_events_publish_a_version_and_the_next_run_reads_only_new_events(bsettings: Settings) -> None:
    world = simulate.Storefront(simulate.SimConfig(seed=3, users=300, items=150))
    first = produce_sim(bsettings, 3_000, 3, world)
    producer = EventProducer(bsettings)
    for bad in (b"not json", b'{"event_id": 1}', b""):  # invalid events are skipped and counted
        producer.send_raw(bsettings.topic_clicks, b"u-bad", bad)
    assert producer.flush(10) == 0
    store = RedisStore(bsettings)

    summary = run_refit(bsettings, store)
    version = current_version(store)
    assert version == summary["version"]
    check_version(store, version)
    model = load_model(store, version)
    assert model is not None
    assert summary["read"] == 3_003 and summary["valid"] == 3_000 and sum(summary["invalid"].values()) == 3
    assert set(model.item_ids) == {e.item_id for e in first}
    assert set(all_user_vectors(store, version)) == {e.user_id for e in first}
    ends = end_offsets(bsettings, bsettings.event_topics)
    assert model.meta["source_offsets"] == {f"{t}:{p}": o for (t, p), o in ends.items()}
    assert model.meta["n_interactions"] == len({(e.user_id, e.item_id) for e in first})
    assert model.meta["params"]["factors"] == 16 and model.meta["fit_seconds"] > 0
    # the learned ranker's item statistics: log(1 + events) and the share of buyers who came back, per item
    assert model.item_stats is not None and model.item_stats.shape == (len(model.item_ids), 2)
    per_item: dict[str, list[str]] = {}
    for e in first:
        per_item.setdefault(e.item_id, []).append(e.user_id)
    item = max(per_item, key=lambda i: len(per_item[i]))
    users = per_item[item]
    again = sum(users.count(u) >= 2 for u in set(users))
    row = model.item_stats[model.item_ids.index(item)]
    np.testing.assert_allclose(row, [np.log1p(len(users)), (again + 0.1) / (len(set(users)) + 1)], rtol=1e-5)
    assert json.loads(store.client.get(last_run_key(store)) or b"{}")["status"] == "ok"

    second = produce_sim(bsettings, 500, 3, world)  # the same world goes on: new users and items appear
    for event in first[-7:]:  # client retries: the same events (event ids) sent again, counted once
        producer.send(event)
    producer.send(second[0])
    assert producer.flush(10) == 0
    summary2 = run_refit(bsettings, store)
    assert summary2["read"] == 508  # only the events after the snapshot's offsets
    assert summary2["duplicates"] == 8
    version2 = current_version(store)
    assert version2 == summary2["version"] and version2 != version
    check_version(store, version2)
    model2 = load_model(store, version2)
    assert model2 is not None
    assert set(model2.item_ids) == {e.item_id for e in first + second}
    assert model2.meta["events"] == 3_500 and model2.meta["invalid_events"] == 3
    assert model2.meta["duplicate_events"] == 8
    assert [v for v, _ in list_versions(store)] == [version, version2]


def test_parallel_reader_returns_what_the_contract_decoder_does(bsettings: Settings) -> None:
    produce_sim(bsettings, 4_000, 11)
    producer = EventProducer(bsettings)
    producer.send_raw(bsettings.topic_purchases, b"x", b'{"type": "purchase"}')
    assert producer.flush(10) == 0
    valid = [r.value for r in read_all(bsettings, bsettings.event_topics) if r.value != b'{"type": "purchase"}']
    assert len(valid) == 4_000
    expected = sorted((e.event_id.int, e.user_id, e.item_id, e.ts, e.type.code)
                      for e in map(decode_event, valid))
    for processes in (1, 2):
        events, end, stats = read_events(bsettings, {}, bsettings.event_topics, processes=processes,
                                         parallel_min_events=0)
        got = sorted((int(hi) << 64 | int(lo), events.users[u], events.items[i], t, p) for (hi, lo), u, i, t, p in zip(
            events.event_id.tolist(), events.user_code.tolist(), events.item_code.tolist(), events.ts_ms.tolist(),
            events.type_code.tolist(), strict=True))
        assert got == expected
        assert stats.processes == processes and stats.invalid == {"invalid_field": 1}
        assert end == end_offsets(bsettings, bsettings.event_topics)
    # from the end offsets on there is nothing new
    events, _, stats = read_events(bsettings, end, bsettings.event_topics)
    assert len(events) == 0 and stats.read == 0
