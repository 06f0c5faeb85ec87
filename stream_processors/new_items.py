"""Items the current model does not know: record their interactions, fold them in once there are enough.

Per model version ``v`` the worker keeps, for every item outside the version's catalogue:

* ``<p>:model:<v>:{n}:pending_n`` -- HASH item -> interactions recorded so far;
* ``<p>:model:<v>:{n}:pending:<item>`` -- LIST of ``user \\x1f weight`` (the newest ``history_cap`` kept).

When an item's count reaches ``new_item_min_interactions`` it is folded in with
:func:`models.foldin.fold_in_items` from the vectors of the users who touched it, against ``XᵀX`` of the
version's users, and written to ``<p>:model:<v>:{n}:new_items``. It is folded again each time its count
doubles (min, 2·min, 4·min, ... up to ``history_cap``); the next refit takes over from there. An item with
a content vector (``<p>:model:<v>:content_items``, from its catalogue metadata) is blended with it, the
content vector counting as ``content_prior_interactions`` interactions (:func:`blend_content`). The
per-version keys expire a week after their last write, so superseded versions leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from redis.client import Pipeline

from models.foldin import fold_in_items, gram
from models.ridge import blend_by_count
from models.weighting import weighted_matrix
from streamrec.store import RedisStore, from_bytes, to_bytes
from streamrec.store.users import ENTRY_SEP

PENDING_TTL_S = 7 * 86_400
SEP = "\x1f"
F32 = npt.NDArray[np.float32]


def pending_count_key(store: RedisStore, version: str) -> str:
    return store.keys.model(version, "pending_n")


def pending_list_key(store: RedisStore, version: str, item: str) -> str:
    return store.keys.pending(version, item)


# One EVAL per batch for every new item's interactions (four commands per item from the client cost the
# worker more in packing and reply parsing than Redis spends on them: ~100 items per 2,000-event batch).
# KEYS = [count hash, list_1, ..., list_n]; ARGV = [cap, ttl, items joined by \x1e, entries_1, ..., entries_n],
# entries_i the ``user \x1f weight`` entries of item i joined by \x1e (ids hold no control characters).
_PENDING_LUA = """
local cap, ttl, items = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
for item in string.gmatch(ARGV[3], "[^\\30]+") do items[#items + 1] = item end
for i = 2, #KEYS do
  local entries = {}
  for entry in string.gmatch(ARGV[i + 2], "[^\\30]+") do entries[#entries + 1] = entry end
  for start = 1, #entries, 4000 do
    redis.call('RPUSH', KEYS[i], unpack(entries, start, math.min(start + 3999, #entries)))
  end
  redis.call('LTRIM', KEYS[i], -cap, -1)
  redis.call('EXPIRE', KEYS[i], ttl)
  redis.call('HINCRBY', KEYS[1], items[i - 1], #entries)
end
redis.call('EXPIRE', KEYS[1], ttl)
return #KEYS - 1
"""


def queue_pending(pipe: Pipeline, store: RedisStore, version: str, pending: Mapping[str, Sequence[str]],
                  cap: int) -> None:
    """Queue on ``pipe`` (one EVAL): append each item's :func:`encode_pending` entries to its list, keep the
    newest ``cap``, add their number to the item's count, and renew both keys' TTL (``PENDING_TTL_S``)."""
    items = [it for it, entries in pending.items() if entries]
    if not items:
        return
    keys = [pending_count_key(store, version), *(pending_list_key(store, version, it) for it in items)]
    pipe.execute_command("EVAL", _PENDING_LUA, len(keys), *keys, cap, PENDING_TTL_S, ENTRY_SEP.join(items),
              *(ENTRY_SEP.join(pending[it]) for it in items))


def user_gram_key(store: RedisStore, version: str) -> str:
    return store.keys.model(version, "user_gram")


def due_for_fold(before: int, after: int, folded: bool, min_n: int, cap: int) -> bool:
    """Whether an item whose count went from ``before`` to ``after`` should be (re)folded now."""
    if after < min_n:
        return False
    if not folded:
        return True
    point = min_n
    while point <= cap:
        if before < point <= after:
            return True
        point *= 2
    return False


def encode_pending(user: str, weight: float) -> str:
    return f"{user}{SEP}{weight:.6g}"


def decode_pending(raw: bytes | str) -> tuple[str, float]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    user, weight = text.rsplit(SEP, 1)
    return user, float(weight)


def fold_items(
    interactions: Mapping[str, Sequence[tuple[str, float]]],
    user_vectors: Mapping[str, F32],
    user_gram: npt.NDArray[np.floating],
    regularization: float,
    alpha: float,
) -> dict[str, F32]:
    """Vectors of the items in ``interactions`` (item -> [(user, weight)]) from their users' vectors.

    Interactions of users without a vector are left out; an item left with none gets no vector.
    """
    users = sorted({u for rows in interactions.values() for u, _ in rows if u in user_vectors})
    if not users:
        return {}
    col = {u: i for i, u in enumerate(users)}
    items = [it for it, rows in interactions.items() if any(u in col for u, _ in rows)]
    r, c, w = [], [], []
    for row, item in enumerate(items):
        for user, weight in interactions[item]:
            if user in col:
                r.append(row)
                c.append(col[user])
                w.append(weight)
    x = np.stack([np.asarray(user_vectors[u], dtype=np.float32) for u in users])
    matrix = weighted_matrix(r, c, w, shape=(len(items), len(users)))
    vectors = fold_in_items(x, user_gram, matrix, regularization, alpha)
    return {item: vectors[i] for i, item in enumerate(items)}


def blend_content(folded: Mapping[str, F32], content: Mapping[str, bytes | None], counts: Mapping[str, int],
                  prior: float) -> dict[str, F32]:
    """Each folded-in vector blended with the item's content vector (when it has one of the same length) by
    :func:`models.ridge.blend_by_count`: the metadata decides at first, the interactions more and more."""
    out = dict(folded)
    for item, vec in folded.items():
        raw = content.get(item)
        if raw and len(raw) == 4 * len(vec):
            out[item] = blend_by_count(from_bytes(raw), vec, counts.get(item, 0), prior)
    return out


def load_user_gram(store: RedisStore, version: str, factors: int) -> npt.NDArray[np.float64]:
    """``XᵀX`` of the version's user vectors: published by the refit at ``<p>:model:<v>:user_gram``,
    or computed here once from the ``users`` hashes (and stored there for the other workers)."""
    key = user_gram_key(store, version)
    raw = store.client.get(key)
    if raw is not None:
        return from_bytes(raw, factors).astype(np.float64)
    total = np.zeros((factors, factors), dtype=np.float64)
    chunk: list[bytes] = []
    for p in range(store.keys.partitions):
        for _, vec in store.client.hscan_iter(store.keys.user_vectors(version, p), count=5_000):
            chunk.append(vec)
            if len(chunk) >= 5_000:
                total += gram(from_bytes(b"".join(chunk), factors)).astype(np.float64)
                chunk = []
    if chunk:
        total += gram(from_bytes(b"".join(chunk), factors)).astype(np.float64)
    store.client.set(key, to_bytes(total), nx=True, ex=PENDING_TTL_S)
    return total
