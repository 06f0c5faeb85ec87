"""The API's cold-start pieces without services: content similarity over a view, new arrivals, the profile
blend and its fading weight."""

from __future__ import annotations

import json

import numpy as np

from models.content import fit_featurizer, normalized_rows
from models.ridge import fit_ridge
from online_api.cache import ModelCache, build_model
from online_api.content import ContentService, ContentView, new_arrivals, with_profile
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.content import ContentPart

SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0", profile_fade_events=4)
ITEMS = [{"category": "shoes", "title": "red runner"}, {"category": "shoes", "title": "blue runner"},
         {"category": "tea", "title": "green tea"}, {"category": "tea", "title": "black tea"},
         {"category": "shoes", "title": "trail runner"}]
IDS = ["s1", "s2", "t1", "t2", "s3"]


def service(profiles: ContentPart | None = None) -> ContentService:
    f = fit_featurizer(ITEMS, SETTINGS.content_config())
    x = f.transform(ITEMS)
    svc = ContentService(SETTINGS, RedisStore(SETTINGS))
    svc.view = ContentView("v1", 0, ContentPart(f, None), profiles, IDS, {i: n for n, i in enumerate(IDS)},
                           normalized_rows(x), np.ones(len(IDS), dtype=np.bool_))
    return svc


def test_content_similarity_ranks_the_same_category_and_words_first_and_skips_unavailable() -> None:
    svc = service()
    got = svc.similar("s1", 3, frozenset())
    assert got is not None and [i for i, _ in got] == ["s2", "s3"] and all(0 < s <= 1 for _, s in got)
    assert [i for i, _ in svc.similar("s1", 3, frozenset({"s2"})) or []] == ["s3"]
    assert svc.similar("unknown", 3, frozenset()) is None
    assert svc.neighbours("t1") == svc.similar("t1", SETTINGS.covis_top_n, frozenset())
    assert svc.neighbours("t1") is svc.neighbours("t1")  # cached
    assert svc.neighbours("unknown") == []


def test_written_items_are_appended_and_an_update_replaces_the_old_row() -> None:
    svc = service()
    view = svc.view
    assert view is not None and view.items is not None
    f = view.items.featurizer
    # t1 becomes a shoe; a new tea arrives: only these two rows are added, the old t1 row stops counting
    svc.view = view.with_rows(2, ["t1", "t3"], f.transform([{"category": "shoes", "title": "red runner"},
                                                              {"category": "tea", "title": "green tea"}]))
    assert svc.view.log_len == 2 and svc.view.normed.shape[0] == 7 and svc.view.live.tolist() == [
        True, True, False, True, True, True, True]
    assert [i for i, _ in svc.similar("s1", 2, frozenset()) or []] == ["t1", "s2"]  # the same text and category
    assert [i for i, _ in svc.similar("t2", 5, frozenset()) or []] == ["t3"]  # the old tea row is gone
    assert view.with_rows(3, [], f.transform([])).log_len == 3


def test_profile_weight_fades_linearly_and_needs_a_fitted_regression_of_the_served_version() -> None:
    profiles = [{"segment": "a"}, {"segment": "b"}] * 6
    f = fit_featurizer(profiles, SETTINGS.content_config(profiles=True))
    ridge = fit_ridge(f.transform(profiles), np.array([[1.0, 0.0], [0.0, 1.0]] * 6), 0.1)
    svc = service(ContentPart(f, ridge))
    assert [svc.profile_weight(n, "v1") for n in (0, 1, 4, 9)] == [1.0, 0.75, 0.0, 0.0]
    assert svc.profile_weight(0, "v2") == 0.0  # another version's regression: other factors
    vec = svc.profile_vector(json.dumps({"segment": "a"}).encode(), 2)
    assert vec is not None and vec[0] > 0.8 > 0.2 > vec[1]
    assert svc.profile_vector(None, 2) is None and svc.profile_vector(b'{"segment": "a"}', 3) is None
    assert service().profile_weight(0, "v1") == 0.0  # no profile regression published


def test_with_profile_blends_and_falls_back() -> None:
    own, prof = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(with_profile(own, prof, 0.25), [0.75, 0.25])
    assert with_profile(None, prof, 0.5) is prof and with_profile(own, None, 1.0) is own
    assert with_profile(own, prof, 0.0) is own


def test_new_arrivals_are_the_items_new_since_the_refit_ranked_for_the_user() -> None:
    y = np.eye(3, dtype=np.float32)
    new = {b"n1": np.array([0, 0, 2], "<f4").tobytes(), b"n2": np.array([0, 3, 0], "<f4").tobytes(),
           b"n3": np.array([5, 5, 5], "<f4").tobytes()}
    cache = ModelCache(SETTINGS)
    view = cache.publish(model=build_model("v1", {}, ["a", "b", "c"], y, y.T @ y, new), unavailable=frozenset({"n3"}))
    user = np.array([0, 0.1, 1], np.float32)
    got = new_arrivals(view, user, 5, frozenset())
    assert [(r.item_id, r.source.value) for r in got] == [("n1", "personal"), ("n2", "personal")]
    assert [r.item_id for r in new_arrivals(view, user, 5, frozenset({"n1"}))] == ["n2"]  # seen ones left out
    assert [(r.item_id, r.source.value) for r in new_arrivals(view, None, 1, frozenset())] == [("n2", "popular")]
    plain = cache.publish(model=build_model("v1", {}, ["a", "b", "c"], y, y.T @ y, {}))
    assert new_arrivals(plain, user, 5, frozenset()) == []
