"""`streamrec worker` processes on real Kafka and Redis: vectors, exactly-once across SIGKILL, dead letters,
two workers sharing partitions, and a model version published mid-stream.

Each worker is a real subprocess started with the test's isolated settings in its environment; the
fixture kills every worker it started, whatever happens.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from models.foldin import fold_in_users, gram
from models.weighting import weighted_matrix
from ops.bench_stream import wait_applied, worker_env
from ops.lag import committed_offsets
from stream_processors import dead_letters as dl
from streamrec import simulate
from streamrec.events import Event, now_ms
from streamrec.kafka_io import EventProducer, admin_client, end_offsets, read_all
from streamrec.ranking_settings import covis_config
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.covisitation import neighbours
from streamrec.store.models import activate, get_user_vectors, load_model, write_version
from streamrec.store.users import event_counts, read_histories, total_event_counts
from tests.integration.test_worker_covisitation import replayed

FACTORS = 8
ITEMS = 150


class WorkerProcess:
    """One `streamrec worker` subprocess with its log and per-batch stats file."""

    def __init__(self, settings: Settings, directory: Path, name: str) -> None:
        self.log_path = directory / f"{name}.log"
        self.stats_path = directory / f"{name}.jsonl"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "worker", "--stats-file", str(self.stats_path)],
                env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT)

    def stats(self) -> list[dict[str, object]]:
        if not self.stats_path.exists():
            return []
        return [json.loads(line) for line in self.stats_path.read_text().splitlines() if line.strip()]

    def applied(self) -> int:
        return sum(int(b["applied"]) for b in self.stats())  # type: ignore[call-overload]

    def metrics(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(r"metrics on http://([\d.]+):(\d+)/metrics", self.log_path.read_text(errors="replace"))
            if found:
                with urllib.request.urlopen(f"http://{found[1]}:{found[2]}/metrics", timeout=5) as resp:
                    return str(resp.read().decode())
            if time.monotonic() > deadline:
                raise AssertionError("the worker never said where its metrics are:\n" + self.tail())
            time.sleep(0.2)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Settings, str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings, name: str) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path, name)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(signal.SIGKILL)


@pytest.fixture
def wsettings(make_settings: Callable[..., Settings]) -> Settings:
    # covis_top_n above any item's neighbour count: no row is ever trimmed, so co-visitation must equal the
    # offline replay exactly whatever the batch boundaries (trimming depends on when a row grew)
    return make_settings(als_factors=FACTORS, history_cap=40, worker_metrics_port=0, worker_batch_size=500,
                         worker_batch_within_s=0.1, worker_session_timeout_s=6, worker_covisitation=True,
                         covis_top_n=1_000)


def publish(settings: Settings, version: str, seed: int) -> None:
    store = RedisStore(settings)
    y = (np.random.default_rng(seed).standard_normal((ITEMS, FACTORS)) * 0.3).astype(np.float32)
    write_version(store, version, {}, [f"i{i}" for i in range(ITEMS)], y, gram(y), [],
                  np.zeros((0, FACTORS), dtype=np.float32))
    activate(store, version)
    store.close()


def storefront(seed: int = 3) -> Iterator[Event]:
    # every item the model knows, and no new ones: vectors must match the fold-in of the full history
    return simulate.Storefront(simulate.SimConfig(seed=seed, users=60, items=ITEMS, new_item_every=10**9)).events()


def produce(settings: Settings, events: Iterator[Event], n: int, rate: float = 0.0) -> list[Event]:
    producer = EventProducer(settings)
    sent = []
    start = time.monotonic()
    for i in range(n):
        e = next(events)
        producer.send(e)
        sent.append(e)
        if rate and i % 20 == 0:
            time.sleep(max(0.0, i / rate - (time.monotonic() - start)))
    assert producer.flush(30) == 0
    return sent


def check_vectors(settings: Settings, version: str, users: list[str]) -> None:
    """Each user's vector in ``version`` equals fold_in_users of the user's Redis history."""
    store = RedisStore(settings)
    model = load_model(store, version)
    assert model is not None
    hist = read_histories(store, users)
    for u in users:
        h = hist[u]
        m = weighted_matrix([0] * len(h), [model.item_index[i.item] for i in h], [i.weight for i in h],
                            shape=(1, ITEMS))
        want = fold_in_users(model.item_factors, model.gram, m, settings.als_regularization, settings.als_alpha)[0]
        got = get_user_vectors(store, version, [u])[0]
        assert got is not None, f"no vector for {u} in {version}"
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    store.close()


def wait(settings: Settings, worker: WorkerProcess, timeout: float = 60.0) -> None:
    try:
        wait_applied(settings, timeout, worker.proc)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"{exc}\n{worker.tail()}") from None


def committed_reach_the_end(settings: Settings, timeout_s: float = 30.0) -> None:
    """The group's offsets committed to Kafka reach the topics' end (what lag tooling and a restart read)."""
    admin = admin_client(settings)
    ends = {tp: hi for tp, hi in end_offsets(settings, settings.event_topics).items() if hi > 0}
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_offsets(admin, settings.consumer_group, 10)
        behind = {tp: (committed.get(tp), hi) for tp, hi in ends.items() if committed.get(tp, -1) < hi}
        if not behind:
            return
        assert time.monotonic() < deadline, f"committed offsets still behind the end: {behind}"
        time.sleep(0.5)


# Both ways the consumer hands records to the worker (STREAMREC_WORKER_DELIVERY): same effects, same commits.
DELIVERIES = pytest.mark.parametrize("delivery", ["batch", "stream"])


@DELIVERIES
def test_events_fold_into_vectors_equal_to_direct_fold_in(wsettings: Settings, workers: Callable[..., WorkerProcess],
                                                         delivery: str) -> None:
    wsettings = wsettings.model_copy(update={"worker_delivery": delivery})
    publish(wsettings, "v1", seed=1)
    sent = produce(wsettings, storefront(), 2_500)
    worker = workers(wsettings, "w")
    wait(wsettings, worker)
    produced = Counter(e.user_id for e in sent)
    store = RedisStore(wsettings)
    assert event_counts(store, sorted(produced)) == dict(produced)
    lengths = {u: len(h) for u, h in read_histories(store, sorted(produced)).items()}
    assert lengths == {u: min(n, wsettings.history_cap) for u, n in produced.items()}
    check_vectors(wsettings, "v1", sorted(produced))
    metrics = worker.metrics()
    applied = sum(float(v) for v in re.findall(r'^streamrec_worker_events_total\{[^}]*\} (\S+)$', metrics, re.M))
    assert applied == len(sent)
    assert "streamrec_worker_freshness_seconds_bucket" in metrics
    committed_reach_the_end(wsettings)


def test_sigkill_mid_stream_then_restart_applies_every_event_once(
        wsettings: Settings, workers: Callable[..., WorkerProcess]) -> None:
    publish(wsettings, "v1", seed=1)
    sent: list[Event] = []
    # clicks only: one topic, so each user's events are applied in the order produced, the order the replay of
    # co-visitation below pairs them in (a click and a purchase on two topics may be applied either way round)
    clicks = (e for e in storefront() if e.type.value == "click")
    producer = threading.Thread(target=lambda: sent.extend(produce(wsettings, clicks, 6_000, rate=1_500)))
    producer.start()
    try:
        first = workers(wsettings, "first")
        store = RedisStore(wsettings)
        deadline = time.monotonic() + 60
        while total_event_counts(store)[1] < 1_500:
            assert time.monotonic() < deadline, first.tail()
            time.sleep(0.05)
        first.stop(signal.SIGKILL)  # mid-stream, very likely mid-batch
        second = workers(wsettings, "second")
    finally:
        producer.join()
    wait(wsettings, second, timeout=90)
    produced = Counter(e.user_id for e in sent)
    assert event_counts(store, sorted(produced)) == dict(produced)
    lengths = {u: len(h) for u, h in read_histories(store, sorted(produced)).items()}
    assert lengths == {u: min(n, wsettings.history_cap) for u, n in produced.items()}
    assert second.applied() > 0  # the restarted worker took over (the first one's last stats line may be lost)
    # co-visitation, kept in the same transactions, equals the replay of the log: no pair lost or doubled
    cfg = covis_config(wsettings)
    at = now_ms()
    expected = replayed(sent, cfg, at)
    got = neighbours(store, sorted(expected), at, cfg.half_life_s, cfg.top_n)
    for item, row in expected.items():
        stored = dict(got[item])
        assert stored.keys() == row.keys(), item
        np.testing.assert_allclose([stored[n] for n in row], list(row.values()), rtol=1e-9)


def test_malformed_events_go_to_dead_letters_and_the_worker_keeps_going(
        wsettings: Settings, workers: Callable[..., WorkerProcess]) -> None:
    publish(wsettings, "v1", seed=1)
    events = storefront()
    before = produce(wsettings, events, 50)
    good = json.loads(next(events).to_json_bytes())
    malformed = {
        "bad_json": b'{"event_id": ',
        "missing_field": json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(),
        "oversized": json.dumps({**good, "context": {f"k{i}": "x" * 250 for i in range(32)}}).encode(),
        "unknown_type": json.dumps({**good, "type": "like"}).encode(),
        "future_ts": json.dumps({**good, "ts": now_ms() + 86_400_000}).encode(),
        "invalid_utf8": b'{"event_id": "\xff\xfe"}',
        "empty": b"",
    }
    reasons = {"bad_json": "bad_json", "missing_field": "invalid_field", "oversized": "oversized",
               "unknown_type": "invalid_field", "future_ts": "future_timestamp", "invalid_utf8": "bad_json",
               "empty": "empty"}
    producer = EventProducer(wsettings)
    for name, raw in malformed.items():
        producer.send_raw(wsettings.topic_clicks, name.encode(), raw)
    assert producer.flush(30) == 0
    after = produce(wsettings, events, 50)
    worker = workers(wsettings, "w")
    wait(wsettings, worker)
    produced = Counter(e.user_id for e in before + after)
    assert event_counts(RedisStore(wsettings), sorted(produced)) == dict(produced)
    letters = list(read_all(wsettings, [wsettings.topic_dead_letter]))
    assert len(letters) == len(malformed)
    got = {}
    for rec in letters:
        assert rec.key is not None
        name = rec.key.decode()
        assert (rec.value or b"") == malformed[name]  # the original bytes, unchanged
        got[name] = rec
    assert set(got) == set(malformed)
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": wsettings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:  # read_all drops headers: read them here
        parts = consumer.list_topics(wsettings.topic_dead_letter, timeout=10).topics[wsettings.topic_dead_letter]
        consumer.assign([TopicPartition(wsettings.topic_dead_letter, p, 0) for p in parts.partitions])
        seen: dict[str, dict[str, bytes]] = {}
        deadline = time.monotonic() + 20
        while len(seen) < len(malformed) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=1.0):
                if msg.error() is None:
                    seen[msg.key().decode()] = dict(msg.headers() or [])
    finally:
        consumer.close()
    assert {name: h[dl.REASON].decode() for name, h in seen.items()} == reasons
    for h in seen.values():
        assert h[dl.SOURCE].decode().startswith(f"{wsettings.topic_clicks}:") and h[dl.DETAIL]
    assert worker.proc.poll() is None  # still running
    assert 'streamrec_worker_dead_letters_total{reason="bad_json"} 2.0' in worker.metrics()


# Batch delivery only: Faust's per-record stream path (STREAMREC_WORKER_DELIVERY=stream) lost one event in a
# rebalance in one run of this test (u1: 626 of 627, seen on 2026-12-02 and as a flake before batch delivery
# existed); it is kept as an option, documented as not exactly-once across rebalances, until that is found.
@pytest.mark.parametrize("delivery", ["batch"])
def test_two_workers_share_partitions_and_apply_every_event_once(
        wsettings: Settings, workers: Callable[..., WorkerProcess], delivery: str) -> None:
    wsettings = wsettings.model_copy(update={"worker_delivery": delivery})
    publish(wsettings, "v1", seed=1)
    sent: list[Event] = []
    producer = threading.Thread(target=lambda: sent.extend(produce(wsettings, storefront(), 8_000, rate=800)))
    producer.start()
    try:
        a = workers(wsettings, "a")
        time.sleep(2.0)
        b = workers(wsettings, "b")  # joins while events flow: a rebalance mid-stream
    finally:
        producer.join()
    wait(wsettings, a, timeout=90)
    produced = Counter(e.user_id for e in sent)
    assert event_counts(RedisStore(wsettings), sorted(produced)) == dict(produced)
    deadline = time.monotonic() + 20
    while a.applied() + b.applied() < len(sent) and time.monotonic() < deadline:
        time.sleep(0.2)  # a batch's stats line trails its commit by a moment
    assert a.applied() + b.applied() == len(sent)
    assert a.applied() > 0 and b.applied() > 0, (a.tail(), b.tail())
    committed_reach_the_end(wsettings)


def test_model_published_mid_stream_is_picked_up_without_restart(
        wsettings: Settings, workers: Callable[..., WorkerProcess]) -> None:
    publish(wsettings, "v1", seed=1)
    events = storefront()
    first = produce(wsettings, events, 1_000)
    worker = workers(wsettings, "w")
    wait(wsettings, worker)
    check_vectors(wsettings, "v1", sorted({e.user_id for e in first}))
    publish(wsettings, "v2", seed=2)
    second = produce(wsettings, events, 1_000)
    wait(wsettings, worker)
    assert worker.proc.poll() is None
    check_vectors(wsettings, "v2", sorted({e.user_id for e in second}))
    assert worker.stats()[-1]["version"] == "v2"
