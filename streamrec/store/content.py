"""Cold start in Redis: the content and profile regressions of a model version, item content features,
content vectors of new items, and user profiles.

Per model version ``v`` (all in :data:`streamrec.store.models.VERSION_PARTS`, removed with the version):

* ``content_model`` / ``profile_model``: the fitted featurizer as JSON (vocabulary, bin edges, settings)
  plus ``n_features`` and ``factors``; ``content_idf`` / ``profile_idf``: its idf, raw float32;
* ``content_coef`` / ``profile_coef``: the ridge coefficients with the intercept as last row, raw float32
  (absent when too few items/users had interactions to fit one);
* ``content_features``: HASH item → its sparse feature row (``n`` int32 column indices then ``n`` float32
  values, little-endian); ``content_log``: LIST of the items written to it since the version was published
  (``PUT`` and ``catalog import``), so readers re-read only those;
* ``content_items``: HASH item → the vector the regression predicted for an item without interactions.
  It is also written to ``new_items`` (which every API process and worker reads) unless the item has a
  vector of its own there (folded in by the worker, which blends it with this one);
* ``content_neighbours``: HASH of every published item's content neighbours, computed at refit
  (:func:`models.content_neighbours.neighbour_table`): ``ids`` (the rows' items, ``\\x1f``-joined, in
  ``content_features``' sorted order), ``idx`` (rows × k int32), ``score`` (rows × k float32), ``count``
  (int16 per row), all little-endian; absent above ``content_neighbours_max_items`` (the API scans instead).

User profiles are version independent: ``<p>:profiles`` HASH user → JSON attributes. Nothing is pickled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from models.content import Featurizer
from models.content_neighbours import NeighbourTable
from models.ridge import RidgeModel
from streamrec.store import F32, RedisStore, as_str, from_bytes, to_bytes
from streamrec.store.catalog import content_record
from streamrec.store.models import list_versions

I32 = np.dtype("<i4")


@dataclass(frozen=True)
class ContentPart:
    """One fitted featurizer and, when there was enough to fit it, its regression to factors."""

    featurizer: Featurizer
    ridge: RidgeModel | None


def encode_row(indices: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    """A sparse row as ``n`` int32 indices then ``n`` float32 values (little-endian)."""
    return np.asarray(indices, dtype=I32).tobytes() + np.asarray(values, dtype=F32).tobytes()


def decode_row(raw: bytes) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The (indices, values) :func:`encode_row` wrote."""
    n = len(raw) // 8
    return np.frombuffer(raw, dtype=I32, count=n), np.frombuffer(raw, dtype=F32, offset=4 * n, count=n)


def rows_of(matrix: sp.csr_matrix) -> list[bytes]:
    """Every row of a CSR matrix, encoded."""
    m = sp.csr_matrix(matrix)
    return [encode_row(m.indices[a:b], m.data[a:b]) for a, b in zip(m.indptr[:-1], m.indptr[1:], strict=True)]


def write_part(store: RedisStore, version: str, name: str, part: ContentPart, factors: int) -> None:
    """Publish a featurizer and its regression as ``<name>_model`` / ``_idf`` / ``_coef`` of ``version``."""
    k = store.keys
    meta = {**part.featurizer.to_json(), "n_features": part.featurizer.n_features, "factors": factors}
    pipe = store.client.pipeline(transaction=False)
    pipe.set(k.model(version, f"{name}_idf"), to_bytes(part.featurizer.idf))
    if part.ridge is not None:
        pipe.set(k.model(version, f"{name}_coef"), to_bytes(part.ridge.to_array()))
    pipe.set(k.model(version, f"{name}_model"), json.dumps(meta))
    pipe.execute()


def read_part(store: RedisStore, version: str, name: str) -> ContentPart | None:
    """The featurizer and regression :func:`write_part` published, or None."""
    k = store.keys
    meta, idf, coef = store.mget([k.model(version, f"{name}_model"), k.model(version, f"{name}_idf"),
                                         k.model(version, f"{name}_coef")])
    if meta is None or idf is None:
        return None
    data = json.loads(meta)
    featurizer = Featurizer.from_json(data, from_bytes(idf))
    ridge = RidgeModel.from_array(from_bytes(coef), featurizer.n_features) if coef is not None else None
    return ContentPart(featurizer, ridge)


def write_features(store: RedisStore, version: str, ids: Sequence[str], rows: Sequence[bytes],
                   chunk: int = 5_000) -> None:
    """Set the content feature rows of many items (pipelined chunks), for a version being published."""
    key = store.keys.model(version, "content_features")
    for start in range(0, len(ids), chunk):
        pipe = store.client.pipeline(transaction=False)
        pipe.hset(key, mapping=dict(zip(ids[start : start + chunk], rows[start : start + chunk], strict=True)))
        pipe.execute()


def write_neighbours(store: RedisStore, version: str, ids: Sequence[str], table: NeighbourTable) -> None:
    """Publish the content neighbours of ``ids`` (the table's rows, in order) for a version."""
    store.client.hset(store.keys.model(version, "content_neighbours"), mapping={
        "ids": "\x1f".join(ids).encode(), "idx": table.idx.astype("<i4").tobytes(),
        "score": table.score.astype("<f4").tobytes(), "count": table.count.astype("<i2").tobytes()})


def read_neighbours(store: RedisStore, version: str) -> tuple[list[str], NeighbourTable] | None:
    """The version's published content neighbours (their rows' ids and the table), or None."""
    raw = cast(dict[bytes, bytes], store.client.hgetall(store.keys.model(version, "content_neighbours")))
    if not raw or b"ids" not in raw:
        return None
    ids = raw[b"ids"].decode().split("\x1f") if raw[b"ids"] else []
    count = np.frombuffer(raw[b"count"], dtype="<i2").astype(np.int16)
    if len(count) != len(ids):
        return None
    k = len(raw[b"idx"]) // 4 // max(1, len(ids))
    idx = np.frombuffer(raw[b"idx"], dtype="<i4").astype(np.int32).reshape(len(ids), k)
    score = np.frombuffer(raw[b"score"], dtype="<f4").astype(np.float32).reshape(len(ids), k)
    return ids, NeighbourTable(idx, score, count)


def write_cold_vectors(store: RedisStore, version: str, ids: Sequence[str], vectors: np.ndarray) -> None:
    """Content vectors of items without interactions, into ``content_items`` and ``new_items`` (a version
    being published: no folded-in vector exists yet)."""
    if not ids:
        return
    store.write_vectors(store.keys.model(version, "content_items"), ids, vectors)
    store.write_vectors(store.keys.model(version, "new_items"), ids, vectors)


# KEYS = [content_features, content_items, new_items, content_log]; ARGV = [item, feature row, vector or '',
# item, row, vector, ...]. A vector replaces the item's new_items entry only while that entry is absent or is
# the previous content vector: a vector the worker folded in from interactions is never overwritten by a
# metadata update (the worker blends the two itself).
PUT_ITEMS_LUA = """
for i = 1, #ARGV, 3 do
  local item, row, vec = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[1], item, row)
  redis.call('RPUSH', KEYS[4], item)
  if vec ~= '' then
    local old = redis.call('HGET', KEYS[2], item)
    local cur = redis.call('HGET', KEYS[3], item)
    redis.call('HSET', KEYS[2], item, vec)
    if (not cur) or cur == old then redis.call('HSET', KEYS[3], item, vec) end
  end
end
return redis.call('LLEN', KEYS[4])
"""


def store_item_content(store: RedisStore, version: str, part: ContentPart, entries: Sequence[Mapping[str, Any]],
                       fitted: Callable[[str], bool], chunk: int = 2_000) -> int:
    """Featurize catalogue entries with ``part`` and store each one's row and, for items the version was not
    ``fitted`` on, the regression's vector (:data:`PUT_ITEMS_LUA`, one script per chunk); returns how many."""
    k = store.keys
    keys = [k.model(version, p) for p in ("content_features", "content_items", "new_items", "content_log")]
    script = store.client.register_script(PUT_ITEMS_LUA)
    for start in range(0, len(entries), chunk):
        batch = entries[start : start + chunk]
        x = part.featurizer.transform([content_record(dict(e)) for e in batch])
        cold = [n for n, e in enumerate(batch) if not fitted(str(e["item_id"]))]
        vectors = dict(zip(cold, part.ridge.predict(x[cold]), strict=True)) if part.ridge is not None and cold else {}
        args: list[Any] = []
        for n, (row, e) in enumerate(zip(rows_of(x), batch, strict=True)):
            vec = vectors.get(n)
            args += [str(e["item_id"]), row, to_bytes(vec) if vec is not None else b""]
        script(keys=keys, args=args)
    return len(entries)


def content_log_len(store: RedisStore, version: str) -> int:
    """How many content writes the version has had since it was published."""
    return int(store.client.llen(store.keys.model(version, "content_log")))


def read_changes(store: RedisStore, version: str, start: int, n_features: int
                 ) -> tuple[int, list[str], sp.csr_matrix]:
    """The items written since log position ``start``: (the log's length now, their ids, their rows)."""
    k = store.keys
    logged = [as_str(i) for i in store.client.lrange(k.model(version, "content_log"), start, -1)]
    ids = list(dict.fromkeys(logged))
    raw = cast(list[bytes | None], store.client.hmget(k.model(version, "content_features"), ids)) if ids else []
    found = [(i, r) for i, r in zip(ids, raw, strict=True) if r is not None]
    return start + len(logged), [i for i, _ in found], _matrix([r for _, r in found], n_features)


def _matrix(rows: Sequence[bytes], n_features: int) -> sp.csr_matrix:
    """Encoded rows as one CSR matrix."""
    indptr, cols, vals = [0], [], []
    for raw in rows:
        idx, val = decode_row(raw)
        cols.append(idx)
        vals.append(val)
        indptr.append(indptr[-1] + len(idx))
    empty_i, empty_f = np.zeros(0, dtype=I32), np.zeros(0, dtype=F32)
    return sp.csr_matrix((np.concatenate(vals or [empty_f]), np.concatenate(cols or [empty_i]), indptr),
                         shape=(len(rows), n_features), dtype=np.float32)


def read_features(store: RedisStore, version: str, n_features: int) -> tuple[list[str], sp.csr_matrix]:
    """Every item with content features in ``version``: (ids sorted, their rows as one CSR matrix)."""
    raw = cast(dict[bytes, bytes], store.client.hgetall(store.keys.model(version, "content_features")))
    ids = sorted(as_str(i) for i in raw)
    return ids, _matrix([bytes(raw[i.encode()]) for i in ids], n_features)


# ------------------------------------------------------------------------------------------- profiles
def put_profile(store: RedisStore, user: str, attributes: Mapping[str, Any]) -> None:
    """Store (replace) a user's profile attributes."""
    store.client.hset(store.keys.profiles(store.keys.partition(user)), user, json.dumps(dict(attributes)))


def get_profile(store: RedisStore, user: str) -> dict[str, Any] | None:
    """A user's profile attributes, or None."""
    raw = store.client.hget(store.keys.profiles(store.keys.partition(user)), user)
    return json.loads(raw) if raw is not None else None


def iter_profiles(store: RedisStore) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every stored profile (user, attributes), scanned in pages, partition by partition."""
    for p in range(store.keys.partitions):
        for user, raw in store.client.hscan_iter(store.keys.profiles(p), count=5_000):
            yield as_str(user), json.loads(raw)


def erased_users(store: RedisStore) -> set[str]:
    """Users deleted since the last refit."""
    return {as_str(u) for u in store.client.hkeys(store.keys.erased)}


def forget_erased(store: RedisStore, users: set[str]) -> None:
    """Drop users from the erased list once a refit published without them."""
    if users:
        store.client.hdel(store.keys.erased, *users)


def delete_user(store: RedisStore, user: str) -> dict[str, int]:
    """Remove everything stored about ``user``: profile, history, event count, and the user's vector and its
    stamp in every model version, plus their entries in the pending interactions of new items; the user is
    listed in ``<p>:erased`` until the next refit dropped their interactions from its snapshot. Returns how
    many of each were removed."""
    k = store.keys
    versions = {v for v, _ in list_versions(store)}
    current = store.client.get(k.current)
    if current:
        versions.add(as_str(current))
    p = k.partition(user)
    # the refit's snapshot still holds the user's summed interactions: the next refit drops them (and then
    # this entry), so no vector comes back. Marked first, so a failure after it still drops them.
    store.client.hset(k.erased, user, int(time.time() * 1000))
    pipe = store.client.pipeline(transaction=True)  # the user's keys: one slot
    pipe.hdel(k.profiles(p), user)
    pipe.delete(k.history(user, p))
    pipe.hdel(k.user_events(p), user)
    for v in sorted(versions):
        pipe.hdel(k.user_vectors(v, p), user)
        pipe.hdel(k.user_ts(v, p), user)
    got = pipe.execute()
    removed = {"profile": int(got[0]), "history": int(got[1]), "event_count": int(got[2]),
               "vectors": int(sum(got[3::2])), "pending": 0}
    for v in sorted(versions):
        removed["pending"] += _drop_pending(store, v, user)
    return removed


def _drop_pending(store: RedisStore, version: str, user: str) -> int:
    """Remove ``user``'s entries (``user \\x1f weight``) from the pending lists of ``version``'s new items."""
    k = store.keys
    items = [as_str(i) for i in store.client.hkeys(k.model(version, "pending_n"))]
    if not items:
        return 0
    lists = [k.pending(version, i) for i in items]
    pipe = store.client.pipeline(transaction=False)
    for key in lists:
        pipe.lrange(key, 0, -1)
    mine = f"{user}\x1f".encode()
    pipe2 = store.client.pipeline(transaction=False)
    n = 0
    for key, entries in zip(lists, pipe.execute(), strict=True):
        for entry in set(e for e in entries if e.startswith(mine)):
            pipe2.lrem(key, 0, entry)
            n += 1
    if n:
        return int(sum(pipe2.execute()))
    return 0
