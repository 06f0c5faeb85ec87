"""models/cold_start.py: the replay's cold-start state is the refit's regression, the API's fade and neighbours,
and it makes an item nobody has touched recommendable in the replay (no services)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from models.cold_start import ColdStartConfig, fit_part, replay_cold_start
from models.covisitation import CovisConfig
from models.eventlog import EventLog, fit_batch
from models.foldin import fold_in_items
from models.hybrid_replay import hybrid_answer, replay_answers
from models.ranking import RankingConfig
from models.replay_state import ContentVectors, ReplayConfig, StreamingState, TrendingConfig
from models.ridge import blend_by_count
from models.signal_state import SignalState
from models.training import ALSParams

CATS, PER_CAT, USERS = 4, 5, 40
COLD = CATS * PER_CAT  # the one item without events before the test window (category 0)


def _records() -> list[dict[str, str] | None]:
    recs: list[dict[str, str] | None] = [{"category": f"c{i // PER_CAT}", "title": f"kind{i // PER_CAT} thing"}
                                         for i in range(CATS * PER_CAT)]
    return [*recs, {"category": "c0", "title": "kind0 thing"}]


def _log(seed: int = 0) -> tuple[EventLog, int]:
    """Users buy from their favourite category; the cold item is first bought at index ``start``."""
    rng = np.random.default_rng(seed)
    n = 1_200
    user = rng.integers(0, USERS, n)
    item = (user % CATS) * PER_CAT + rng.integers(0, PER_CAT, n)
    lover = int(np.flatnonzero(user % CATS == 0)[-1])
    start = n - 100
    user[start], item[start] = user[lover], COLD
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 60_000
    log = EventLog(ts, user.astype(np.int64), item.astype(np.int64), np.ones(n, dtype=np.float32), USERS, COLD + 1)
    return log, start


def _cold(log: EventLog, start: int, cfg: ColdStartConfig | None = None):  # type: ignore[no-untyped-def]
    model = fit_batch(log, start, ALSParams(factors=8, regularization=0.1, alpha=2.0, iterations=10))
    users_per_item = np.bincount(log.item[:start], minlength=log.n_items)
    profiles = [{"segment": f"s{u % CATS}"} for u in range(USERS)]
    items_per_user = np.bincount(log.user[:start], minlength=log.n_users)
    return model, replay_cold_start(_records(), profiles, model.item_factors, model.known_items, users_per_item,
                                    model.user_factors, model.known_users, items_per_user, cfg or ColdStartConfig())


def test_cold_items_get_the_regression_the_refit_fits_and_it_is_scikit_learns_ridge() -> None:
    log, start = _log()
    model, cold = _cold(log, start)
    assert cold.has_content_vector.tolist() == [False] * COLD + [True]  # only the item the model does not know
    records = _records()
    part = fit_part(records, ColdStartConfig().items, model.item_factors, list(range(COLD)), list(range(COLD)), 1.0)
    x = part.rows.toarray()
    reference = Ridge(alpha=1.0).fit(x[:COLD], model.item_factors[:COLD])
    np.testing.assert_allclose(cold.item_vectors[COLD], reference.predict(x[COLD:])[0], rtol=1e-3, atol=1e-4)
    # the prediction is like its category's items: it scores highest for the users who buy them
    scores = model.user_factors @ cold.item_vectors[COLD]
    lovers = np.arange(USERS) % CATS == 0
    assert scores[lovers].mean() > scores[~lovers].max()


def test_content_neighbours_stand_in_only_for_items_without_covisitation_ones() -> None:
    log, start = _log()
    _, cold = _cold(log, start)
    best, scores = cold.content_neighbours(COLD)
    assert set(best[:PER_CAT].tolist()) == set(range(PER_CAT))  # category 0 and its words first
    assert np.all(scores[:PER_CAT] > 0.99) and np.all(scores[PER_CAT:] < 0.9)  # others share the word "thing"
    covis = {3: (np.array([7]), np.array([1.0]))}
    merged = cold.with_content_neighbours(lambda i: covis.get(i, (np.zeros(0, dtype=np.int64), np.zeros(0))))
    assert merged(3)[0].tolist() == [7]
    assert merged(COLD)[0].tolist() == best.tolist()
    off = _cold(log, start, ColdStartConfig(content_neighbours=False))[1]
    assert len(off.with_content_neighbours(lambda i: (np.zeros(0, dtype=np.int64), np.zeros(0)))(COLD)[0]) == 0


def test_a_profile_vector_fades_linearly_as_the_users_events_arrive() -> None:
    log, start = _log()
    _, cold = _cold(log, start, ColdStartConfig(profile_fade_events=4))
    u = 0
    own, profile = np.ones(8, dtype=np.float32), cold.user_vectors[u]
    assert cold.has_profile_vector.all()  # every profiled user, known to the model or not
    np.testing.assert_allclose(cold.user_vector(u, None, 0), profile)
    np.testing.assert_allclose(cold.user_vector(u, own, 1), 0.25 * own + 0.75 * profile, rtol=1e-6)
    np.testing.assert_allclose(cold.user_vector(u, own, 4), own)


def test_the_streaming_state_starts_cold_items_at_their_content_vector_and_blends_the_fold_in() -> None:
    log, start = _log()
    model, cold = _cold(log, start)
    rcfg = ReplayConfig(new_item_min_interactions=1, refresh_s=60.0)
    vectors = ContentVectors(cold.item_vectors, cold.has_content_vector, 3.0)
    plain = StreamingState(model, log, start, rcfg)
    state = StreamingState(model, log, start, rcfg, vectors)
    assert not plain.has_vec[COLD] and state.has_vec[COLD]
    np.testing.assert_array_equal(state.item_factors[COLD], cold.item_vectors[COLD])
    state.advance(int(log.ts_ms[start + 2]))  # the refreshes after the cold item's first purchase
    buyers = sp.csr_matrix((np.ones(1, dtype=np.float32), ([0], [int(log.user[start])])), shape=(1, USERS))
    folded = fold_in_items(state.user_factors, model.user_gram, buyers, model.regularization, model.alpha)[0]
    np.testing.assert_allclose(state.item_factors[COLD], blend_by_count(cold.item_vectors[COLD], folded, 1, 3.0),
                               rtol=1e-4, atol=1e-5)


def test_the_hybrid_recommends_an_untouched_item_only_with_content() -> None:
    log, start = _log()
    model, cold = _cold(log, start)
    cfg = RankingConfig(exclude_seen=False)
    rcfg = ReplayConfig(k=10, exclude_seen=False)
    state = SignalState(log, start, len(log), (CovisConfig(),), (None,))
    methods = {"with": hybrid_answer(cfg, content=True), "without": hybrid_answer(cfg)}
    queries = np.array([start], dtype=np.int64)
    res = replay_answers(log, start, len(log), queries, log.user[queries], [np.array([COLD])], log.n_items, state,
                         (TrendingConfig(),), model, rcfg, methods, cold=cold)
    assert COLD in res.recs["with"][0].tolist()
    assert COLD not in res.recs["without"][0].tolist()  # no event, no vector, no neighbour: it cannot be shown
