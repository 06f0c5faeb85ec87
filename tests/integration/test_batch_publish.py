"""Publishing on real Kafka and Redis: no mixed versions, failed fits, no update lost, rollback."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from batch.admin import NoPreviousVersion, rollback
from batch.foldback import refold_users
from batch.refit import RefitError, last_failure_key, run_refit
from models.foldin import fold_in_users
from models.training import ALSModelFactors, ALSParams, train_als
from ops import cli
from streamrec import simulate
from streamrec.events import Event, EventType, now_ms
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore, from_bytes
from streamrec.store.models import current_version, get_user_vectors, load_model
from streamrec.store.users import Interaction, append_history
from tests.integration.test_batch import check_version, produce_sim


@pytest.fixture
def bsettings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(batch_snapshot_dir=tmp_path / "snapshot", als_factors=16, als_iterations=4)


@pytest.fixture
def store(bsettings: Settings) -> Iterator[RedisStore]:
    s = RedisStore(bsettings)
    yield s
    s.close()


def write_history(store: RedisStore, settings: Settings, events: list[Event]) -> None:
    """What the streaming worker does per event: append to the user's history in MULTI/EXEC."""
    for e in events:
        weight = settings.type_weights[e.type.value]
        pipe = store.client.pipeline(transaction=True)
        append_history(pipe, store, e.user_id, [Interaction(e.item_id, weight, e.ts, e.type.value)],
                       settings.history_cap)
        pipe.execute()


def expected_vector(store: RedisStore, version: str, user: str, settings: Settings) -> np.ndarray:
    """fold_in_users of the user's full Redis history against the version's item factors."""
    model = load_model(store, version)
    assert model is not None
    weights: dict[int, float] = {}
    for raw in store.client.lrange(store.keys.history(user), 0, -1):
        it = Interaction.decode(raw)
        if it.item in model.item_index:
            weights[model.item_index[it.item]] = weights.get(model.item_index[it.item], 0.0) + it.weight
    idx = np.array(sorted(weights))
    hist = [(idx, np.array([weights[i] for i in idx]))]
    return fold_in_users(model.item_factors, model.gram, hist, settings.als_regularization, settings.als_alpha)[0]


def user_vector(store: RedisStore, version: str, user: str) -> np.ndarray:
    vec = get_user_vectors(store, version, [user])[0]
    assert vec is not None
    return vec


def test_a_reader_polling_during_publishes_never_sees_a_mixed_version(bsettings: Settings, store: RedisStore) -> None:
    world = simulate.Storefront(simulate.SimConfig(seed=5, users=400, items=200))
    produce_sim(bsettings, 2_000, 5, world)
    run_refit(bsettings, store)
    seen: list[str] = []
    problems: list[str] = []
    stop = threading.Event()
    reader = RedisStore(bsettings)

    def poll() -> None:
        while not stop.is_set():
            model = load_model(reader)
            if model is None:
                problems.append("no current model")
                continue
            n = model.meta["n_items"]
            if not n == len(model.item_ids) == model.item_factors.shape[0] or model.gram.shape != (16, 16):
                problems.append(f"mixed version {model.version}: meta {n}, ids {len(model.item_ids)}, "
                                f"factors {model.item_factors.shape}")
            if seen and model.version < seen[-1]:
                problems.append(f"went back from {seen[-1]} to {model.version}")
            if not seen or seen[-1] != model.version:
                seen.append(model.version)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for _ in range(3):  # every run brings new items, so n_items differs between versions
            produce_sim(bsettings, 800, 5, world)
            run_refit(bsettings, store)
    finally:
        stop.set()
        thread.join()
        reader.close()
    assert not problems, problems[:3]
    assert len(seen) >= 2 and seen[-1] == current_version(store)


def test_a_failed_fit_leaves_the_current_version_serving_and_says_why(bsettings: Settings, store: RedisStore) -> None:
    produce_sim(bsettings, 1_500, 8)
    good = run_refit(bsettings, store)["version"]
    produce_sim(bsettings, 300, 9)

    def broken_fit(matrix: sp.csr_matrix, params: ALSParams) -> ALSModelFactors:
        raise MemoryError("injected: the fit ran out of memory")

    def diverged_fit(matrix: sp.csr_matrix, params: ALSParams) -> ALSModelFactors:
        model = train_als(matrix, params)
        model.item_factors[0, 0] = np.nan
        return model

    for fit, reason in ((broken_fit, "out of memory"), (diverged_fit, "non-finite")):
        with pytest.raises(RefitError, match=reason) as err:
            run_refit(bsettings, store, fit=fit)
        assert err.value.stage == "fit"
        assert current_version(store) == good
        check_version(store, good)
        failure = json.loads(store.client.get(last_failure_key(store)) or b"{}")
        assert failure["stage"] == "fit" and reason in failure["error"]
        # no half-written version left behind
        versions = {k.decode().split(":")[2] for k in store.client.scan_iter(f"{bsettings.redis_prefix}:model:v*:*")}
        assert versions == {good}
    # the snapshot kept the events: the next good run fits them without re-reading
    fixed = run_refit(bsettings, store)
    assert fixed["read"] == 0 and current_version(store) == fixed["version"] != good


def test_a_user_with_events_during_the_fit_has_a_vector_that_reflects_them(
    bsettings: Settings, store: RedisStore
) -> None:
    events = produce_sim(bsettings, 2_000, 13)
    write_history(store, bsettings, events)  # the worker kept the histories up to date
    run_refit(bsettings, store)
    counts: dict[str, int] = {}
    for e in events:
        counts[e.user_id] = counts.get(e.user_id, 0) + 1
    user = max(counts, key=lambda u: counts[u])
    items = sorted({e.item_id for e in events})
    late = [Event(event_id=f"00000000-0000-4000-8000-{k:012d}", user_id=user, item_id=items[k], type=EventType.CLICK,
                  ts=now_ms()) for k in range(3)]
    during_fit: list[bool] = []

    def slow_fit(matrix: sp.csr_matrix, params: ALSParams) -> ALSModelFactors:
        model = train_als(matrix, params)
        # while the job fits, the user clicks: the events reach Kafka and the worker's history
        producer = EventProducer(bsettings)
        for e in late:
            producer.send(e)
        assert producer.flush(10) == 0
        write_history(store, bsettings, late)
        during_fit.append(True)
        return model

    summary = run_refit(bsettings, store, fit=slow_fit)
    assert during_fit and summary["refold_users"] == 1 and summary["read"] == 0
    version = summary["version"]
    np.testing.assert_allclose(user_vector(store, version, user), expected_vector(store, version, user, bsettings),
                               rtol=1e-4, atol=1e-5)
    # the next run fits the late events and re-folds nobody
    assert run_refit(bsettings, store)["read"] == 3


def test_refold_retries_when_the_worker_writes_history_meanwhile(bsettings: Settings, store: RedisStore) -> None:
    events = produce_sim(bsettings, 1_000, 17)
    write_history(store, bsettings, events)
    version = run_refit(bsettings, store)["version"]
    model = load_model(store, version)
    assert model is not None
    user = events[0].user_id
    racing = [Event(event_id="00000000-0000-4000-8000-000000000001", user_id=user, item_id=model.item_ids[-1],
                    type=EventType.PURCHASE, ts=now_ms())]
    before = expected_vector(store, version, user, bsettings)

    def worker_writes(chunk: list[str]) -> None:
        if racing:  # once: between our read and our write, the worker appends a purchase
            write_history(store, bsettings, [racing.pop()])

    result = refold_users(bsettings, store, version, model.item_factors, model.gram, model.item_index, [user],
                          after_read=worker_writes)
    assert result == {"refold_users": 1, "refold_skipped": 0, "refold_retries": 1}
    after = expected_vector(store, version, user, bsettings)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(user_vector(store, version, user), after, rtol=1e-4, atol=1e-5)


def test_rollback_makes_the_previous_version_current(
    bsettings: Settings, store: RedisStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in bsettings.model_dump(exclude_none=True).items():
        monkeypatch.setenv(f"STREAMREC_{name.upper()}", str(value))
    world = simulate.Storefront(simulate.SimConfig(seed=21))
    produce_sim(bsettings, 1_000, 21, world)
    assert cli.main(["batch", "rollback"]) == 1
    assert "no previous model version" in capsys.readouterr().err
    with pytest.raises(NoPreviousVersion):
        rollback(bsettings, store)
    assert cli.main(["batch", "run"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"]
    produce_sim(bsettings, 500, 21, world)
    second = run_refit(bsettings, store)["version"]
    assert current_version(store) == second

    assert cli.main(["batch", "rollback"]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == first
    assert current_version(store) == first
    check_version(store, first)
    assert cli.main(["batch", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == first and status["previous"] == second
    assert status["meta"]["version"] == first and status["last_run"]["status"] == "ok"
    assert rollback(bsettings, store)["current"] == second  # and forward again


def test_bulk_vector_writes_store_the_same_bytes_as_plain_pipelines(bsettings: Settings, store: RedisStore) -> None:
    """The publish's pre-built RESP path must be byte-for-byte the plain path, and fail cleanly."""
    from batch.fastredis import BulkStore

    rng = np.random.default_rng(5)
    ids = [f"u{k}" for k in range(12_000)] + ["ü-ß", "a b", "x\r\ny", "*3", "$1"]  # RESP-looking ids too
    block = rng.standard_normal((len(ids), 16)).astype(np.float32)
    plain, bulk_key = store.keys.model("vt", "plain"), store.keys.model("vt", "bulk")
    bulk = BulkStore.like(store, bsettings)
    try:
        store.write_vectors(plain, ids, block)
        bulk.write_vectors(bulk_key, ids, block, chunk=5_000)
        assert store.client.hgetall(plain) == store.client.hgetall(bulk_key)
        assert from_bytes(store.client.hget(bulk_key, "ü-ß")).tolist() == block[-5].tolist()
        with pytest.raises(ValueError, match="2 ids but 1 vectors"):
            bulk.write_vectors(bulk_key, ["a", "b"], block[:1])
        store.client.set(store.keys.model("vt", "str"), "not a hash")
        with pytest.raises(Exception, match="WRONGTYPE"):
            bulk.write_vectors(store.keys.model("vt", "str"), ids, block, chunk=5_000)
        assert bulk.client.ping()  # every reply was drained: the connection is still in step
        assert bulk.client.hlen(bulk_key) == len(ids)
    finally:
        bulk.close()
        store.client.unlink(plain, bulk_key, store.keys.model("vt", "str"))
