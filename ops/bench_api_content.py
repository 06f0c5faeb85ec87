"""`streamrec bench api --compare-content`: the request cost of the hybrid's content sources.

On the synthetic data of :mod:`ops.bench_api`, the serving version also gets a content model, as the refit
publishes it (:func:`models.cold_start.fit_part` on every item's category, brand and title; a feature row per
item for content similarity), and a profile model; a share of the users get a profile (they have no event
counter, so their profile vector is blended in), and only a share of the items co-visitation neighbours (the
others' session items fall back to their content neighbours). The same load is then driven against a second
API process with the content sources off (``STREAMREC_RANK_CONTENT_NEIGHBOURS=false``,
``STREAMREC_PROFILE_FADE_EVENTS=0``) on the same data.
"""

from __future__ import annotations

import sys

import numpy as np

from batch.content_fit import content_neighbours
from models.cold_start import fit_part
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.content import ContentPart, put_profile, rows_of, write_features, write_neighbours, write_part

PROFILED_SHARE = 0.3  # users with a profile
COVIS_SHARE = 0.7  # items with co-visitation neighbours (the others get content neighbours)
WORDS = ("fresh", "organic", "crunchy", "sweet", "spicy", "family", "pack", "light", "dark", "classic", "roast",
         "whole", "grain", "mild", "extra", "large", "small", "bottle", "frozen", "dairy")
SEGMENTS = ("student", "family", "retired", "single", "couple")


def publish_content(settings: Settings, store: RedisStore, version: str, items: list[str], users: list[str],
                    factors: int, seed: int) -> None:
    """Item and profile models for ``version`` (fitted on random targets: the bench measures speed), every
    item's feature row and content neighbours, and profiles for :data:`PROFILED_SHARE` of ``users``."""
    rng = np.random.default_rng(seed)
    records = [{"category": f"cat-{i % 20}", "brand": f"brand{i % 300}",
                "title": " ".join(rng.choice(WORDS, 3).tolist())} for i in range(len(items))]
    train = list(range(0, len(items), 5))
    targets = rng.normal(scale=0.1, size=(len(items), factors)).astype(np.float32)
    part = fit_part(records, settings.content_config(), targets, train, train, settings.content_ridge_alpha)
    write_part(store, version, "content", ContentPart(part.featurizer, part.ridge), factors)
    write_features(store, version, items, rows_of(part.rows))
    print(f"[bench api] content neighbours of {len(items)} items, as the refit computes them ...", file=sys.stderr,
          flush=True)
    write_neighbours(store, version, *content_neighbours(items, part.rows, settings.covis_top_n))
    profiled = users[: int(len(users) * PROFILED_SHARE)]
    profiles = [{"segment": SEGMENTS[n % len(SEGMENTS)], "region": f"r{n % 7}", "household_size": 1 + n % 5}
                for n in range(len(profiled))]
    rows = list(range(len(profiled)))
    user_targets = rng.normal(scale=0.5, size=(len(profiled), factors)).astype(np.float32)
    ppart = fit_part(profiles, settings.content_config(profiles=True), user_targets, rows, rows,
                     settings.profile_ridge_alpha)
    write_part(store, version, "profile", ContentPart(ppart.featurizer, ppart.ridge), factors)
    for user, attrs in zip(profiled, profiles, strict=True):
        put_profile(store, user, attrs)


def without_content(settings: Settings) -> Settings:
    """The same settings with the hybrid's content sources off."""
    return settings.model_copy(update={"rank_content_neighbours": False, "profile_fade_events": 0})
