"""The compacted snapshot: merging runs, time decay on aggregates, atomic files."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from batch.refit import training_set
from batch.snapshot import (
    NewEvents,
    Snapshot,
    SnapshotError,
    SnapshotOutdated,
    discard,
    duplicates,
    load,
    merge,
    save,
)
from models.event_types import TYPE_NAMES, type_named
from streamrec.settings import Settings

DAY_MS = 86_400_000
T0 = 1_700_000_000_000
TOPICS = ["clicks", "purchases"]


Ev = tuple[str, str, int, "bool | str"]  # (user, item, ts, type: a name, or True/False for purchase/click)


def _w(cw: float, pw: float, **others: float) -> dict[str, float]:
    """Type weights: click ``cw``, purchase ``pw``, the others from ``others`` (view 0.5, add_to_cart 3)."""
    return {"view": 0.5, "add_to_cart": 3.0, **others, "click": cw, "purchase": pw}


def _name(kind: bool | str) -> str:
    return kind if isinstance(kind, str) else "purchase" if kind else "click"


def _events(rng: np.random.Generator, n: int, t_lo: int, t_hi: int) -> list[Ev]:
    users = [f"u{k}" for k in range(30)] + ["ü ser", "ünï"]
    items = [f"i {k}" for k in range(20)]
    return [(users[rng.integers(len(users))], items[rng.integers(len(items))], int(rng.integers(t_lo, t_hi)),
             str(rng.choice(TYPE_NAMES, p=[0.2, 0.5, 0.1, 0.2]))) for _ in range(n)]


_ids = iter(range(1, 10**9))


def _as_new(events: list[Ev], ids: list[int] | None = None) -> NewEvents:
    """Columnar events; each gets a fresh event id unless ``ids`` (one int per event) says otherwise."""
    users = list(dict.fromkeys(e[0] for e in events))
    items = list(dict.fromkeys(e[1] for e in events))
    ids = ids if ids is not None else [next(_ids) for _ in events]
    words = np.array([[k >> 64, k & (2**64 - 1)] for k in ids], np.uint64).reshape(-1, 2)
    return NewEvents(users, items, np.array([users.index(e[0]) for e in events], np.int32),
                     np.array([items.index(e[1]) for e in events], np.int32),
                     np.array([e[2] for e in events], np.int64),
                     np.array([type_named(_name(e[3])).code for e in events], np.uint8), words)


def _direct(events: list[Ev], weights: dict[str, float], at: int, half_life_s: float | None):
    """Per-(user, item) weight at ``at``, count and newest ts, computed event by event."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0, 0])
    for user, item, ts, kind in events:
        decay = 1.0 if half_life_s is None else 0.5 ** ((at - ts) / 1000 / half_life_s)
        row = out[(user, item)]
        row[0] += weights[_name(kind)] * decay
        row[1] += 1
        row[2] = max(row[2], ts)
    return out


def _by_pair(snap: Snapshot, weights: dict[str, float], at: int) -> dict[tuple[str, str], list[float]]:
    w = snap.weights(weights, at)
    return {(snap.users[u], snap.items[i]): [w[k], snap.count[k], snap.last_ts[k]]
            for k, (u, i) in enumerate(zip(snap.user_idx.tolist(), snap.item_idx.tolist(), strict=True))}


@pytest.mark.parametrize("half_life_s", [None, 3 * 86_400.0])
def test_merging_runs_equals_aggregating_all_events_at_once(half_life_s: float | None) -> None:
    rng = np.random.default_rng(5)
    # three runs; the second one carries late events older than the first run's newest
    runs = [_events(rng, 400, T0, T0 + 5 * DAY_MS), _events(rng, 300, T0 - 2 * DAY_MS, T0 + 9 * DAY_MS),
            _events(rng, 200, T0 + 9 * DAY_MS, T0 + 20 * DAY_MS)]
    snap = Snapshot(half_life_s=half_life_s)
    for n, run in enumerate(runs):
        snap = merge(snap, _as_new(run), {("clicks", 0): 100 * (n + 1), ("clicks", n + 1): 7}, invalid=n)
    every = [e for run in runs for e in run]
    at = T0 + 25 * DAY_MS
    expected = _direct(every, _w(1.0, 5.0), at, half_life_s)
    got = _by_pair(snap, _w(1.0, 5.0), at)
    assert set(got) == set(expected)
    for pair, (w, count, last) in expected.items():
        assert got[pair][0] == pytest.approx(w, rel=1e-9)
        assert got[pair][1:] == [count, last]
    # sorted by (user, item) and unique
    key = snap.user_idx.astype(np.int64) * len(snap.items) + snap.item_idx
    assert (np.diff(key) > 0).all()
    assert snap.events == len(every) and snap.invalid == 0 + 1 + 2
    assert snap.offsets == {("clicks", 0): 300, ("clicks", 1): 7, ("clicks", 2): 7, ("clicks", 3): 7}
    # type weights may change between runs: the sums are kept per type
    other = _w(2.0, 0.5, view=0.0, add_to_cart=7.0)
    assert _by_pair(snap, other, at)[every[0][:2]][0] == pytest.approx(
        _direct(every, other, at, half_life_s)[every[0][:2]][0], rel=1e-9)


def test_decay_halves_per_half_life_and_merging_an_empty_run_changes_nothing() -> None:
    snap = merge(Snapshot(half_life_s=86_400.0), _as_new([("u", "i", T0, False), ("u", "j", T0, True)]), {})
    assert snap.weights(_w(1.0, 5.0), T0).tolist() == [1.0, 5.0]
    assert snap.weights(_w(1.0, 5.0), T0 + 2 * DAY_MS) == pytest.approx([0.25, 1.25])
    same = merge(snap, _as_new([]), {("clicks", 0): 3})
    assert same.weights(_w(1.0, 5.0), T0 + DAY_MS) == pytest.approx(snap.weights(_w(1.0, 5.0), T0 + DAY_MS))
    assert same.ref_ms == snap.ref_ms and same.offsets == {("clicks", 0): 3}


def test_save_and_load_round_trip_atomically(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    snap = merge(Snapshot(half_life_s=None), _as_new(_events(rng, 500, T0, T0 + DAY_MS)), {("clicks", 2): 500})
    save(snap, tmp_path, TOPICS)
    snap2 = merge(snap, _as_new(_events(rng, 50, T0, T0 + DAY_MS)), {("clicks", 2): 550})
    save(snap2, tmp_path, TOPICS)
    assert len(list(tmp_path.glob("snapshot-*.npz"))) == 1  # the superseded data file is gone
    assert not list(tmp_path.glob(".tmp-*"))
    back = load(tmp_path, list(reversed(TOPICS)), None)
    assert back.users == snap2.users and back.items == snap2.items
    for name in ("user_idx", "item_idx", "sums", "count", "last_ts", "recent_ids", "recent_ts"):
        np.testing.assert_array_equal(getattr(back, name), getattr(snap2, name))
    assert (back.offsets, back.ref_ms, back.events) == (snap2.offsets, snap2.ref_ms, snap2.events)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (tmp_path / manifest["data"]).exists()


def test_load_refuses_a_snapshot_made_for_other_topics_or_half_life(tmp_path: Path) -> None:
    assert len(load(tmp_path, TOPICS, None)) == 0  # nothing yet: covers nothing
    save(merge(Snapshot(), _as_new([("u", "i", T0, False)]), {("clicks", 0): 1}), tmp_path, TOPICS)
    with pytest.raises(SnapshotError, match="covers topics"):
        load(tmp_path, ["other.clicks", "other.purchases"], None)
    with pytest.raises(SnapshotError, match="half-life"):
        load(tmp_path, TOPICS, 3600.0)
    discard(tmp_path)
    assert load(tmp_path, TOPICS, 3600.0).offsets == {}


def test_an_old_format_snapshot_is_outdated_never_misread(tmp_path: Path) -> None:
    """Format 2 (clicks and purchases arrays) or another set of types: SnapshotOutdated, so the refit
    rebuilds it from the topics (tests/integration/test_batch.py runs that); its sums are never read."""
    snap = merge(Snapshot(), _as_new([("u", "i", T0, "add_to_cart"), ("u", "j", T0, True)]), {("clicks", 0): 2})
    save(snap, tmp_path, TOPICS)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == 3 and manifest["types"] == list(TYPE_NAMES)
    back = load(tmp_path, TOPICS, None)
    np.testing.assert_array_equal(back.sums, snap.sums)
    assert back.weights(_w(1.0, 5.0), T0).tolist() == [3.0, 5.0]
    old = {k: v for k, v in manifest.items() if k != "types"}
    for bad in ({**old, "format": 2}, {**old, "format": 1}, {**manifest, "types": ["click", "purchase"]}):
        manifest_path.write_text(json.dumps(bad))
        with pytest.raises(SnapshotOutdated, match="rebuild"):
            load(tmp_path, TOPICS, None)


def test_training_set_weighs_each_type_by_its_setting() -> None:
    events = [("a", "x", T0, "view"), ("a", "x", T0, "add_to_cart"), ("b", "y", T0, "add_to_cart")]
    snap = merge(Snapshot(), _as_new(events), {})
    train = training_set(snap, Settings(view_weight=0.25, add_to_cart_weight=2.0), T0)
    assert train.matrix.toarray().tolist() == [[2.25, 0.0], [0.0, 2.0]]
    assert training_set(snap, Settings(), T0).matrix.toarray().tolist() == [[3.5, 0.0], [0.0, 3.0]]


def test_training_set_drops_users_and_items_without_weight() -> None:
    events = [("a", "x", T0, False), ("b", "y", T0, True), ("b", "x", T0, False), ("c", "z", T0, False)]
    snap = merge(Snapshot(), _as_new(events), {})
    train = training_set(snap, Settings(click_weight=0.0, purchase_weight=3.0), T0)
    assert train.user_ids == ["b"] and train.item_ids == ["y"]
    assert train.matrix.toarray().tolist() == [[3.0]]
    full = training_set(snap, Settings(), T0)
    assert full.matrix.shape == (3, 3) and full.matrix.nnz == 4


def test_an_event_id_sent_twice_is_counted_once_within_a_run_and_across_runs_in_the_window() -> None:
    hour = 3_600_000
    a, b, c = ("u1", "i1", T0, False), ("u1", "i2", T0 + 10, True), ("u2", "i1", T0 + 20, False)
    # run 1: event 7 sent twice (a client retry); events 8 and 9 once
    snap = merge(Snapshot(half_life_s=None), _as_new([a, a, b, c], ids=[7, 7, 8, 9]), {("clicks", 0): 4},
                 dedup_window_ms=hour)
    assert (snap.events, snap.duplicates) == (3, 1)
    assert _by_pair(snap, _w(1.0, 5.0), T0)[("u1", "i1")][:2] == [1.0, 1]
    # run 2, within the window: 8 again (dropped), 2**100 new; ids are compared as 128 bits
    later = ("u1", "i1", T0 + hour // 2, False)
    snap = merge(snap, _as_new([b, later], ids=[8, 2**100]), {("clicks", 0): 6}, dedup_window_ms=hour)
    assert (snap.events, snap.duplicates) == (4, 2)
    assert _by_pair(snap, _w(1.0, 5.0), T0)[("u1", "i2")][1] == 1
    # run 3 moves the newest event 2 h past event 9, whose id leaves the window; run 4 resends it and it
    # counts again (as in the worker, whose de-duplication window is the same setting)
    snap = merge(snap, _as_new([("u3", "i3", T0 + 2 * hour + 20, False)], ids=[10]), {("clicks", 0): 7},
                 dedup_window_ms=hour)
    assert sorted(int(h) << 64 | int(lo) for h, lo in snap.recent_ids) == [10]
    snap = merge(snap, _as_new([c], ids=[9]), {("clicks", 0): 8}, dedup_window_ms=hour)
    assert (snap.events, snap.duplicates) == (6, 2)


def test_ids_that_collide_in_the_fast_check_are_not_taken_for_duplicates() -> None:
    k = 0x9E3779B97F4A7C15
    hi1, lo1 = 12345, 678
    lo2 = lo1 + 1
    hi2 = hi1 ^ ((lo1 * k) % 2**64) ^ ((lo2 * k) % 2**64)  # same 64-bit mix, different 128-bit id
    ids = [hi1 << 64 | lo1, hi2 << 64 | lo2, hi1 << 64 | lo1]
    new = _as_new([("u1", "i1", T0, False)] * 3, ids=ids)
    assert duplicates(Snapshot(), new).tolist() == [False, False, True]


def test_the_refit_rebuilds_an_old_format_snapshot_from_the_topics(tmp_path: Path) -> None:
    """A format-2 snapshot (clicks and purchases arrays) is discarded: the run starts from offset 0."""
    from batch.refit import _load_snapshot

    settings = Settings(batch_snapshot_dir=tmp_path)
    (tmp_path / "snapshot-old.npz").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": 2, "data": "snapshot-old.npz", "topics": sorted(settings.event_topics), "half_life_s": None,
        "offsets": [[settings.topic_clicks, 0, 500]], "ref_ms": T0, "events": 500, "invalid": 0,
        "n_users": 0, "n_items": 0, "n_entries": 0}))
    snap = _load_snapshot(settings, rebuild=False)
    assert snap.offsets == {} and len(snap) == 0 and snap.events == 0
    assert not list(tmp_path.glob("snapshot-*.npz")) and not (tmp_path / "manifest.json").exists()


def test_without_users_drops_their_entries_and_ids_and_keeps_the_rest() -> None:
    from batch.snapshot import without_users

    events = _events(np.random.default_rng(4), 400, T0, T0 + DAY_MS)
    snap = merge(Snapshot(), _as_new(events), {("clicks", 0): 400})
    w = _w(1.0, 4.0)
    gone = {"u3", "ünï"}
    kept = without_users(snap, gone)
    assert not gone & set(kept.users)
    expect = {pair: row for pair, row in _by_pair(snap, w, T0).items() if pair[0] not in gone}
    assert _by_pair(kept, w, T0) == expect
    order = list(zip(kept.user_idx.tolist(), kept.item_idx.tolist(), strict=True))
    assert order == sorted(order)  # still sorted by (user, item)
    assert without_users(snap, {"nobody"}) is snap
