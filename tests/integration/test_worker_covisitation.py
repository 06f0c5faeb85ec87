"""Co-visitation kept by the worker's core on real Redis equals the offline replay of the same log.

The worker pairs each event with the user's previous items inside its batch transaction; whatever the
batch boundaries, redeliveries and duplicates, the neighbour scores in Redis must be those
:func:`models.covisitation.log_pairs` computes from the time-ordered log (what the evaluation replays).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from models.covisitation import CovisConfig, decayed_value, log_pairs
from models.ids import IdMap
from stream_processors.processor import BatchProcessor
from streamrec.events import now_ms
from streamrec.ranking_settings import covis_config
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.covisitation import neighbours
from tests.integration.test_worker_core import Feed, event


def replayed(events: list, cfg: CovisConfig, at_ms: int) -> dict[str, dict[str, float]]:
    """item -> neighbour -> true score at ``at_ms``, from the whole log at once."""
    users, items = IdMap(), IdMap()
    ts = np.array([e.ts for e in events], dtype=np.int64)
    u = np.array([users.add(e.user_id) for e in events], dtype=np.int64)
    it = np.array([items.add(e.item_id) for e in events], dtype=np.int64)
    purchase = np.array([e.type.value == "purchase" for e in events])
    _, a, b, w = log_pairs(ts, u, it, purchase, None, cfg, at_ms, 0, len(events))
    out: dict[str, dict[str, float]] = {}
    for x, y, v in zip(a.tolist(), b.tolist(), decayed_value(w, at_ms, at_ms, cfg.half_life_s).tolist(), strict=True):
        row = out.setdefault(items.id_of(x), {})
        row[items.id_of(y)] = row.get(items.id_of(y), 0.0) + v
    return out


def test_worker_covisitation_equals_the_replay_whatever_the_batches(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(als_factors=8, worker_covisitation=True, covis_half_life_s=600.0, covis_window_s=120.0,
                      covis_max_prev=3, covis_top_n=40)
    cfg = covis_config(s)
    store = RedisStore(s)
    proc = BatchProcessor(s, store, dead_letters=lambda _letters: None, sleep=lambda _s: None)
    rng = np.random.default_rng(4)
    t0 = now_ms() - 3_600_000
    events = [event(f"u{rng.integers(12)}", f"i{rng.integers(25)}",
                    "purchase" if rng.random() < 0.2 else "click", ts=t0 + 7_000 * n) for n in range(300)]
    records = Feed(s).records(events)
    cuts = [0, 1, 40, 41, 170, 300]
    for lo, hi in itertools.pairwise(cuts):
        assert not proc.process(records[lo:hi]).dead_letters  # a one-event batch (no pair) included
    again = proc.process(records[30:200])  # Kafka redelivers: nothing is counted twice
    assert again.applied == 0

    at = now_ms()
    expected = replayed(events, cfg, at)
    got = neighbours(store, sorted(expected), at, cfg.half_life_s, cfg.top_n)
    assert expected and all(len(v) <= cfg.top_n for v in got.values())
    for item, row in expected.items():
        stored = dict(got[item])
        assert stored.keys() == row.keys(), item
        assert np.allclose([stored[n] for n in row], list(row.values()), rtol=1e-9), item
    store.close()


def test_covisitation_can_be_switched_off(make_settings: Callable[..., Settings]) -> None:
    s = make_settings(als_factors=8, worker_covisitation=False)
    store = RedisStore(s)
    proc = BatchProcessor(s, store, dead_letters=lambda _letters: None, sleep=lambda _s: None)
    t = now_ms() - 10_000
    proc.process(Feed(s).records([event("u", "a", ts=t), event("u", "b", ts=t + 1)]))
    assert not list(store.client.scan_iter(f"{s.redis_prefix}:covis:*"))
    store.close()
