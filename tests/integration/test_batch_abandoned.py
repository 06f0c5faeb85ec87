"""A publish killed half-way leaves keys of a version that is neither current nor listed; the next refit
removes them before it publishes, and never touches the current or listed versions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from batch.refit import remove_abandoned_versions
from models.foldin import gram
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import activate, current_version, load_model, write_version


def test_abandoned_versions_are_removed_and_served_ones_kept(make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    store = RedisStore(s)
    y = np.ones((3, 4), dtype=np.float32)
    for v in ("v1", "v2"):
        write_version(store, v, {}, ["a", "b", "c"], y, gram(y), ["u"], np.ones((1, 4), dtype=np.float32))
        activate(store, v)
    # what a SIGKILLed publish leaves: user vectors of a version without meta, never activated
    p = store.keys.partition("u")
    store.client.hset(store.keys.user_vectors("v3", p), mapping={"u": b"\0" * 16})
    store.client.hset(store.keys.user_ts("v3", p), mapping={"u": "1"})
    assert remove_abandoned_versions(store) == ["v3"]
    assert not store.client.exists(store.keys.user_vectors("v3", p), store.keys.user_ts("v3", p))
    assert current_version(store) == "v2"
    assert load_model(store, "v1") is not None and load_model(store, "v2") is not None
    assert remove_abandoned_versions(store) == []
    store.close()
