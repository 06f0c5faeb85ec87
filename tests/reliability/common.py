"""Checks shared by the reliability scenarios: exactly-once accounting, vector consistency, request specs."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.foldin import fold_in_users
from models.weighting import weighted_matrix
from streamrec.events import InvalidEvent, decode_event
from streamrec.kafka_io import read_all
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.models import current_version, get_user_vectors, load_model
from streamrec.store.users import all_event_counts, read_histories


def user_counts(store: RedisStore) -> dict[str, int]:
    """Every user's applied event count (``<p>:user_events``)."""
    return all_event_counts(store)


def exactly_once(produced: dict[str, int], applied: dict[str, int]) -> dict[str, int]:
    """Compare per-user counts: events lost (produced, not applied) and doubled (applied more than produced)."""
    lost = doubled = off = 0
    for user in produced.keys() | applied.keys():
        diff = applied.get(user, 0) - produced.get(user, 0)
        if diff:
            off += 1
        lost += max(0, -diff)
        doubled += max(0, diff)
    return {"produced": sum(produced.values()), "applied": sum(applied.values()), "lost": lost,
            "doubled": doubled, "users": len(produced), "users_off": off}


def kafka_events(settings: Settings) -> dict[str, str]:
    """event id -> user id of every valid event in the event topics (duplicates collapse)."""
    out: dict[str, str] = {}
    for rec in read_all(settings, settings.event_topics, timeout=60):
        try:
            e = decode_event(rec.value)
        except InvalidEvent:
            continue
        out[str(e.event_id)] = e.user_id
    return out


def per_user(ids_to_user: dict[str, str], ids: Iterable[str] | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for eid in ids_to_user if ids is None else ids:
        user = ids_to_user[eid]
        counts[user] = counts.get(user, 0) + 1
    return counts


def consistent(before: list[Any], after: list[Any], count: int, cap: int) -> bool:
    """Two histories (newest first) the worker could both have built from the same log.

    Clicks and purchases are on two topics: within each, the order is the partition's and identical in any
    replay, but how a user's clicks and purchases interleave depends on how the consumer's fetches of the two
    topics happened to meet (the live worker does not fix it either). So: both hold min(count, cap) entries,
    per type one is a prefix of the other (newest first; the cap may cut each type at a different point),
    and when nothing was cut they hold exactly the same entries.
    """
    if len(before) != min(count, cap) or len(after) != len(before):
        return False
    if count <= cap and sorted(before) != sorted(after):
        return False
    for etype in ("click", "purchase"):
        b = [e for e in before if e[3] == etype]
        a = [e for e in after if e[3] == etype]
        n = min(len(a), len(b))
        if a[:n] != b[:n]:
            return False
    return True


def vector_errors(settings: Settings, store: RedisStore, users: Sequence[str], sample: int = 300,
                  seed: int = 0) -> dict[str, Any]:
    """For a sample of ``users``: each vector in the current version against the fold-in of the user's
    Redis history computed here (items the version knows; no decay). Returns the worst difference."""
    version = current_version(store)
    model = load_model(store, version) if version else None
    assert model is not None, "no current model version"
    picked = random.Random(seed).sample(list(users), min(sample, len(users)))
    histories = read_histories(store, picked)
    raw = get_user_vectors(store, model.version, picked)
    worst, checked, missing = 0.0, 0, []
    for user, vec in zip(picked, raw, strict=True):
        h = [i for i in histories[user] if i.item in model.item_index]
        if not h:
            continue
        if vec is None:
            missing.append(user)
            continue
        m = weighted_matrix([0] * len(h), [model.item_index[i.item] for i in h], [i.weight for i in h],
                            shape=(1, len(model.item_ids)))
        want = fold_in_users(model.item_factors, model.gram, m, settings.als_regularization, settings.als_alpha)[0]
        got = vec
        worst = max(worst, float(np.max(np.abs(got - want)) / max(1e-6, float(np.max(np.abs(want))))))
        checked += 1
    return {"version": model.version, "checked": checked, "missing": len(missing), "max_rel_error": worst}


def write_spec(path: Path, mix: list[dict[str, Any]], *, users: Sequence[str], items: Sequence[str],
               key: str | None = None) -> Path:
    """The request mix file of ``python -m tests.reliability.load http``."""
    path.write_text(json.dumps({"mix": mix, "users": list(users), "items": list(items), "key": key}))
    return path


def strip_ids(result: dict[str, Any]) -> dict[str, Any]:
    """A load result without its id lists (for the report)."""
    return {k: v for k, v in result.items() if not k.endswith("_ids") and not k.endswith("per_user")}


def count_5xx(*results: dict[str, Any]) -> int:
    return sum(n for r in results for code, n in r.get("status", {}).items() if code.startswith("5"))
