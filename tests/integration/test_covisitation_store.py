"""Co-visitation in real Redis (streamrec.store.covisitation): decayed scores, trimming, rebasing, expiry."""

from __future__ import annotations

import numpy as np

from models.covisitation import decayed_value
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.covisitation import EPOCH_FIELD, covis_key, neighbours, queue_pairs

HOUR_S = 3_600.0
T0 = 1_800_000_000_000


def add(store: RedisStore, pairs: list[tuple[str, str, float]], now_ms: int, top_n: int = 10) -> None:
    pipe = store.client.pipeline(transaction=True)
    rows: dict[str, tuple[list[str], list[float]]] = {}
    for a, b, w in pairs:
        rows.setdefault(a, ([], []))
        rows[a][0].append(b)
        rows[a][1].append(w)
    queue_pairs(pipe, store, rows, now_ms, HOUR_S, top_n)
    pipe.execute()


def test_scores_decay_with_the_half_life_and_increments_add(settings: Settings) -> None:
    store = RedisStore(settings)
    add(store, [("a", "b", 1.0), ("a", "c", 0.25), ("b", "a", 0.5)], T0)
    got = neighbours(store, ["a", "b", "zzz"], T0, HOUR_S, 10)
    assert [n for n, _ in got["a"]] == ["b", "c"] and got["zzz"] == []
    assert np.allclose([s for _, s in got["a"]], [1.0, 0.25]) and np.allclose(got["b"][0][1], 0.5)
    later = T0 + 3_600_000  # one half-life on: old pairs weigh half, a new one adds at full weight
    add(store, [("a", "c", 1.0)], later)
    got = dict(neighbours(store, ["a"], later, HOUR_S, 10)["a"])
    assert np.isclose(got["b"], 0.5) and np.isclose(got["c"], 0.125 + 1.0)
    # the same figures as the numeric core's decayed units (what the offline replay computes)
    stored_b = float(store.client.hget(covis_key(store, "a"), "b"))
    epoch = int(float(store.client.hget(covis_key(store, "a"), EPOCH_FIELD)))
    assert np.isclose(decayed_value(stored_b, later, epoch, HOUR_S), 0.5)
    assert 0 < store.client.ttl(covis_key(store, "a")) <= 80 * 3_600
    store.close()


def test_an_item_keeps_its_best_neighbours_only(settings: Settings) -> None:
    store = RedisStore(settings)
    add(store, [("x", f"n{i}", float(i)) for i in range(1, 8)], T0, top_n=3)  # 7 > 2·3: trimmed to 3
    assert store.client.hlen(covis_key(store, "x")) == 3 + 2  # + the epoch and count fields
    assert [n for n, _ in neighbours(store, ["x"], T0, HOUR_S, 3)["x"]] == ["n7", "n6", "n5"]
    add(store, [("x", "n1", 100.0)], T0, top_n=3)  # 4 fields: under 2·3, kept until the next trim
    assert [n for n, _ in neighbours(store, ["x"], T0, HOUR_S, 3)["x"]] == ["n1", "n7", "n6"]
    store.close()


def test_a_trim_keeps_the_best_scores_and_of_tied_ones_the_smallest_ids(settings: Settings) -> None:
    store = RedisStore(settings)
    rng = np.random.default_rng(3)
    for trial in range(20):  # scores on a coarse grid: many ties, also at the cut
        item, top_n = f"t{trial}", int(rng.integers(2, 8))
        weights = rng.integers(1, 5, 2 * top_n + 1 + int(rng.integers(0, 6))).astype(float)
        pairs = [(item, f"n{rng.integers(0, 10**6)}-{j}", w) for j, w in enumerate(weights.tolist())]
        add(store, pairs, T0, top_n=top_n)
        want = sorted(((b, w) for _, b, w in pairs), key=lambda bw: (-bw[1], bw[0]))[:top_n]
        raw = store.client.hgetall(covis_key(store, item))
        kept = {f.decode(): float(v) for f, v in raw.items() if f not in (b"", b"\x01")}
        assert kept == dict(want), (top_n, weights)
        assert int(raw[b"\x01"]) == top_n  # the count field follows
    store.close()


def test_an_old_hash_is_rebased_and_keeps_its_true_scores(settings: Settings) -> None:
    store = RedisStore(settings)
    add(store, [("r", "old", 2.0 ** 30)], T0)
    much_later = T0 + 70 * 3_600_000  # 70 half-lives: beyond the rebase threshold
    add(store, [("r", "new", 1.0)], much_later)
    assert int(float(store.client.hget(covis_key(store, "r"), EPOCH_FIELD))) == much_later
    got = dict(neighbours(store, ["r"], much_later, HOUR_S, 10)["r"])
    assert np.isclose(got["new"], 1.0) and np.isclose(got["old"], 2.0 ** 30 * 2.0 ** -70)
    store.close()
