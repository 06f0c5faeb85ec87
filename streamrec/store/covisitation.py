"""Item-to-item co-visitation in Redis: each item's decayed neighbour scores, one hash per item.

``<prefix>:{c}:covis:<item>`` maps each neighbour id to its score *stored in decayed units* of the hash's own
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
``TTL_HALF_LIVES`` half-lives with each new epoch: an item nobody visits any more fades out and then
disappears. The field ``"\x01"`` counts the neighbour fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from redis.client import Pipeline

from streamrec.store import RedisStore, as_str

REBASE_HALF_LIVES = 60.0  # 2^60 keeps 15 significant digits of the smallest increment: plenty
# The TTL is set with the epoch: longer than the rebase interval, so an active item's hash is renewed at its
# rebase; an item nobody pairs with any more goes 80 half-lives after its epoch (a pair then weighs 1e-24).
TTL_HALF_LIVES = 80
EPOCH_FIELD = ""
COUNT_FIELD = "\x01"  # the number of neighbour fields (ids hold no control characters)

# KEYS = the items' hashes; ARGV = [now_ms, half_life_ms, top_n, ttl_s, rebase, ids_1, weights_1, ..., ids_n,
# weights_n]: ids_i key i's neighbour ids joined by \x1e (ids hold no control characters), weights_i their
# increments (already decayed to now) as little-endian float64s. Two calls per key in the steady state (HMGET,
# HSET), whatever its number of increments: the field count is kept in the hash (no HLEN) and the TTL is set
# when the epoch is (no EXPIRE per batch: it outlives the rebase, which renews it while the item is active).
_ADD_LUA = """
local now, hl, top, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local rebase = tonumber(ARGV[5])
for i = 1, #KEYS do
  local key, ids, weights, n = KEYS[i], {}, ARGV[5 + 2 * i], 0
  for id in string.gmatch(ARGV[4 + 2 * i], "[^\\30]+") do n = n + 1; ids[n] = id end
  local cur = redis.call('HMGET', key, '', '\\1', unpack(ids))
  local epoch, count, scale, fresh = tonumber(cur[1]), tonumber(cur[2]) or 0, 1, false
  if not epoch then
    epoch, fresh = now, true
  elseif (now - epoch) / hl > rebase then
    scale = 2 ^ (-(now - epoch) / hl)
    local all = redis.call('HGETALL', key)
    for j = 1, #all, 2 do
      if all[j] ~= '' and all[j] ~= '\\1' then redis.call('HSET', key, all[j], tonumber(all[j + 1]) * scale) end
    end
    epoch, fresh = now, true
  end
  local units = 2 ^ ((now - epoch) / hl)
  local args, m = {}, 0
  for j = 1, n do
    local old = tonumber(cur[j + 2])
    if not old then old, count = 0, count + 1 end
    args[m + 1] = ids[j]
    args[m + 2] = old * scale + struct.unpack('<d', weights, 8 * j - 7) * units
    m = m + 2
  end
  args[m + 1], args[m + 2], args[m + 3], args[m + 4] = '', epoch, '\\1', count
  redis.call('HSET', key, unpack(args))
  if count > 2 * top then
    -- Keep the best ``top`` (score descending, ties to the smaller id): the top-th best score is the
    -- threshold; everything above it stays, and of the ties at it the smallest ids fill the rest. Sorting
    -- plain numbers (and, for ties, strings) compares in C: 40 % less than sorting rows with a Lua
    -- comparator (145 against 89 us per trim of 101 fields), the same fields kept.
    local all, names, vals, scores, m = redis.call('HGETALL', key), {}, {}, {}, 0
    for j = 1, #all, 2 do
      local f = all[j]
      if f ~= '' and f ~= '\\1' then
        local v = tonumber(all[j + 1])
        m = m + 1; names[m] = f; vals[m] = v; scores[m] = v
      end
    end
    local drop = {}
    if m > top then
      table.sort(scores)
      local thr, above = scores[m - top + 1], 0
      for j = m, 1, -1 do if scores[j] > thr then above = above + 1 else break end end
      local ties = {}
      for j = 1, m do
        local v = vals[j]
        if v < thr then drop[#drop + 1] = names[j] elseif v == thr then ties[#ties + 1] = names[j] end
      end
      if #ties > top - above then
        table.sort(ties)
        for j = top - above + 1, #ties do drop[#drop + 1] = ties[j] end
      end
    end
    for j = 1, #drop, 1000 do redis.call('HDEL', key, unpack(drop, j, math.min(j + 999, #drop))) end
    redis.call('HSET', key, '\\1', m - #drop)
  end
  if fresh then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""


def covis_key(store: RedisStore, item: str) -> str:
    """The hash of ``item``'s neighbours."""
    return f"{store.keys.prefix}:{{c}}:covis:{item}"


def queue_pairs(pipe: Pipeline, store: RedisStore, rows: Mapping[str, tuple[Sequence[str], npt.ArrayLike]],
                now_ms: int, half_life_s: float, top_n: int) -> None:
    """Queue on ``pipe``: for each item, add the weights (already decayed to ``now_ms``) to its neighbours.

    ``rows`` maps an item to (neighbour ids, increments), one increment per neighbour: aggregate a batch's
    pairs first (:func:`models.covisitation.aggregate_pairs`).
    """
    if not rows:
        return
    keys = [covis_key(store, item) for item in rows]
    args: list[str | bytes] = []
    for ids, weights in rows.values():
        args.append("\x1e".join(ids))
        args.append(np.ascontiguousarray(weights, dtype="<f8").tobytes())
    ttl = max(int(TTL_HALF_LIVES * half_life_s), 3_600)
    pipe.execute_command("EVAL", _ADD_LUA, len(keys), *keys, now_ms, half_life_s * 1000.0, top_n, ttl,
                         REBASE_HALF_LIVES, *args)


def parse_neighbours(raw: dict[bytes, bytes] | dict[str, str], now_ms: int, half_life_s: float,
                     top_n: int) -> list[tuple[str, float]]:
    """An item hash (``HGETALL``) as its best ``top_n`` neighbours with their true scores at ``now_ms``."""
    if not raw:
        return []
    # The API parses three of these per request: one comprehension (every field, the epoch and the count
    # included, is a number), then the two bookkeeping fields taken out, rather than a branch per field.
    scores = {as_str(f): float(v) for f, v in raw.items()}
    epoch = scores.pop(EPOCH_FIELD, None)
    scores.pop(COUNT_FIELD, None)
    if not scores:
        return []
    factor = 2.0 ** (((epoch if epoch is not None else now_ms) - now_ms) / (half_life_s * 1000.0))
    best = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:top_n]
    return [(name, score * factor) for name, score in best]


def neighbours(store: RedisStore, items: Sequence[str], now_ms: int, half_life_s: float,
               top_n: int) -> dict[str, list[tuple[str, float]]]:
    """Each of ``items``' best neighbours with true scores at ``now_ms`` (one round trip)."""
    pipe = store.client.pipeline(transaction=False)
    for item in items:
        pipe.hgetall(covis_key(store, item))
    return {item: parse_neighbours(raw, now_ms, half_life_s, top_n)
            for item, raw in zip(items, pipe.execute(), strict=True)}
