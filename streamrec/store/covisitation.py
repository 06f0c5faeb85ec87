"""Item-to-item co-visitation in Redis: each item's decayed neighbour scores, one hash per item.

``<prefix>:covis:<item>`` maps each neighbour id to its score *stored in decayed units* of the hash's own
epoch (see :mod:`models.covisitation`): ``stored = weight · 2^((t - epoch) / half_life)``, so adding a
pair is a plain ``HINCRBYFLOAT`` and no score is ever rescanned to decay it. The field ``""`` (no item id
is empty) holds the epoch in epoch milliseconds. The true score at ``now`` is
``stored · 2^((epoch - now) / half_life)``: one factor per item, so an item's neighbour order never
changes with time, and scores of different items compare once each is multiplied by its factor.

Writes (the worker, inside its batch transaction) go through one Lua script per batch that, for each
touched item: starts the epoch at the batch's time, re-expresses the hash in a new epoch when the
exponent passed ``REBASE_HALF_LIVES`` (a rescale of at most ``2 · top_n`` fields, once every few dozen
half-lives), adds the increments, trims the hash to its best ``top_n`` neighbours once it holds more than
``2 · top_n`` (memory stays bounded: at most ``2 · top_n`` fields per item), and sets a TTL of
``TTL_HALF_LIVES`` half-lives: an item nobody visits any more fades out and then disappears.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from redis.client import Pipeline

from streamrec.store import RedisStore, as_str

REBASE_HALF_LIVES = 60.0  # 2^60 keeps 15 significant digits of the smallest increment: plenty
TTL_HALF_LIVES = 40  # after 40 half-lives a pair weighs 1e-12 of a fresh one
EPOCH_FIELD = ""

# KEYS = the items' hashes; ARGV = [now_ms, half_life_ms, top_n, ttl_s, rows_1, ..., rows_n], rows_i the
# increments of key i as "neighbour \x1f weight-at-now" joined by \x1e (ids hold no control characters).
_ADD_LUA = """
local now, hl, top, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rebase = tonumber(ARGV[5])
for i = 1, #KEYS do
  local key = KEYS[i]
  local epoch = tonumber(redis.call('HGET', key, ''))
  if not epoch then
    epoch = now
    redis.call('HSET', key, '', now)
  elseif (now - epoch) / hl > rebase then
    local f = 2 ^ (-(now - epoch) / hl)
    local all = redis.call('HGETALL', key)
    for j = 1, #all, 2 do
      if all[j] ~= '' then redis.call('HSET', key, all[j], tonumber(all[j + 1]) * f) end
    end
    epoch = now
    redis.call('HSET', key, '', now)
  end
  local units = 2 ^ ((now - epoch) / hl)
  for item, weight in string.gmatch(ARGV[5 + i], "([^\\31\\30]+)\\31([^\\31\\30]+)") do
    redis.call('HINCRBYFLOAT', key, item, tonumber(weight) * units)
  end
  if redis.call('HLEN', key) - 1 > 2 * top then
    local all, rows = redis.call('HGETALL', key), {}
    for j = 1, #all, 2 do
      if all[j] ~= '' then rows[#rows + 1] = {all[j], tonumber(all[j + 1])} end
    end
    table.sort(rows, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
    local drop = {}
    for j = top + 1, #rows do drop[#drop + 1] = rows[j][1] end
    for j = 1, #drop, 1000 do redis.call('HDEL', key, unpack(drop, j, math.min(j + 999, #drop))) end
  end
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""


def covis_key(store: RedisStore, item: str) -> str:
    """The hash of ``item``'s neighbours."""
    return f"{store.keys.prefix}:covis:{item}"


def queue_pairs(pipe: Pipeline, store: RedisStore, a: Sequence[str], b: Sequence[str],
                weights: npt.ArrayLike, now_ms: int, half_life_s: float, top_n: int) -> None:
    """Queue on ``pipe``: add ``weights`` (already decayed to ``now_ms``) to the pairs ``a[i] → b[i]``.

    Aggregate a batch's pairs first (:func:`models.covisitation.aggregate_pairs`): one field per pair.
    """
    w = np.asarray(weights, dtype=np.float64)
    if not len(w):
        return
    rows: dict[str, list[str]] = {}
    for x, y, v in zip(a, b, w.tolist(), strict=True):
        rows.setdefault(x, []).append(f"{y}\x1f{v!r}")
    keys = [covis_key(store, x) for x in rows]
    hl_ms = half_life_s * 1000.0
    ttl = max(int(TTL_HALF_LIVES * half_life_s), 3_600)
    pipe.eval(_ADD_LUA, len(keys), *keys, now_ms, hl_ms, top_n, ttl, REBASE_HALF_LIVES,
              *("\x1e".join(r) for r in rows.values()))


def parse_neighbours(raw: dict[bytes, bytes] | dict[str, str], now_ms: int, half_life_s: float,
                     top_n: int) -> list[tuple[str, float]]:
    """An item hash (``HGETALL``) as its best ``top_n`` neighbours with their true scores at ``now_ms``."""
    epoch = None
    pairs: list[tuple[str, float]] = []
    for field, value in raw.items():
        name = as_str(field)
        if name == EPOCH_FIELD:
            epoch = float(value)
        else:
            pairs.append((name, float(value)))
    if not pairs:
        return []
    factor = 2.0 ** (((epoch if epoch is not None else now_ms) - now_ms) / (half_life_s * 1000.0))
    pairs.sort(key=lambda p: (-p[1], p[0]))
    return [(name, score * factor) for name, score in pairs[:top_n]]


def neighbours(store: RedisStore, items: Sequence[str], now_ms: int, half_life_s: float,
               top_n: int) -> dict[str, list[tuple[str, float]]]:
    """Each of ``items``' best neighbours with true scores at ``now_ms`` (one round trip)."""
    pipe = store.client.pipeline(transaction=False)
    for item in items:
        pipe.hgetall(covis_key(store, item))
    return {item: parse_neighbours(raw, now_ms, half_life_s, top_n)
            for item, raw in zip(items, pipe.execute(), strict=True)}
