"""The API's hybrid recommendations: Redis state → :func:`models.ranking.build_inputs` → :func:`models.ranking.rank`.

One Lua round trip (:data:`HYBRID_STATE_LUA`) reads everything a request needs: the user's vector and its
stamp, the history's items, weights and timestamps, and the co-visitation hashes (``HGETALL``) of the
session's newest ``session_items`` distinct items (posted session items first, then the history). The
inputs are then built by the evaluation's own :func:`models.ranking.build_inputs` (co-visitation, repeat,
trending, popular) plus the personal signal (:func:`personal_signal`: the same top ``candidates`` as
:func:`models.ranking.personal_signal`, from the item index re-ranked exactly on a big catalogue, else
scored with the served model's transposed factors, several times faster than ``factors @ vec``), and
ranked by :func:`models.ranking.rank`, the function the evaluation calls. Items the model does not know
(new since the refit, only in co-visitation or trending) get request-local indices after the model's
(:class:`LocalIndex`), so they rank like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.intsets import distinct, union
from models.profile import repeat_profile
from models.ranking import Ranking, RankingConfig, RankingInputs, Signal, UserState, build_inputs, with_signals
from online_api.cache import View
from online_api.retrieval import personal_top
from online_api.schemas import Ranked, Source
from streamrec.store.covisitation import parse_neighbours

IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
EMPTY = np.zeros(0, dtype=np.int64)

# KEYS = [users hash, user_ts hash, history list, profiles hash]; ARGV = [user id ('' = no user), session items n,
# co-visitation key prefix ("<prefix>:{c}:covis:"), posted session items newest first...]. Returns
# {vector, vector ts, items, weights, ts (history newest first, joined by \x1e), session items (joined),
# the profile or false, HGETALL of each session item}. The co-visitation keys are built here (they depend on
# the history); on a Redis Cluster they are in another slot than the user's keys, so there ARGV[3] is '' and
# the API reads them in a second round trip (:func:`session_items`). The profile (KEYS[4]) is read only for
# a user with fewer than ARGV[4] history entries (a new user, whose profile vector is blended in:
# online_api/content.py), in the same round trip. All KEYS are the user's, in one slot.
# KEYS = co-visitation hashes (all in slot {c}); returns the HGETALL of each: one command for the session items'
# co-visitation on a Redis Cluster, where HYBRID_STATE_LUA cannot read them
COVIS_LUA = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

HYBRID_STATE_LUA = """
local vec, ts = false, false
local items, weights, stamps = {}, {}, {}
if ARGV[1] ~= '' then
  vec = redis.call('HGET', KEYS[1], ARGV[1])
  ts = redis.call('HGET', KEYS[2], ARGV[1])
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    local a = string.find(e, '\\31', 1, true)
    local b = a and string.find(e, '\\31', a + 1, true)
    local c = b and string.find(e, '\\31', b + 1, true)
    if c and a > 1 then
      local n = #items + 1
      items[n] = string.sub(e, 1, a - 1)
      weights[n] = string.sub(e, a + 1, b - 1)
      stamps[n] = string.sub(e, b + 1, c - 1)
    end
  end
end
local want, sess, taken = tonumber(ARGV[2]), {}, {}
local function take(it)
  if #sess < want and not taken[it] then taken[it] = true; sess[#sess + 1] = it end
end
for i = 5, #ARGV do take(ARGV[i]) end
for i = 1, #items do take(items[i]) end
local profile = false
if ARGV[1] ~= '' and #items < tonumber(ARGV[4]) then profile = redis.call('HGET', KEYS[4], ARGV[1]) end
local out = {vec, ts, table.concat(items, '\\30'), table.concat(weights, '\\30'), table.concat(stamps, '\\30'),
             table.concat(sess, '\\30'), profile}
if ARGV[3] ~= '' then
  for i, it in ipairs(sess) do out[7 + i] = redis.call('HGETALL', ARGV[3] .. it) end
end
return out
"""


@dataclass
class UserReply:
    """The script's answer, parsed: history oldest first (as :class:`models.ranking.UserState` wants it)."""

    vec_raw: bytes | None
    ts_raw: bytes | None
    items: list[str]
    weights: F64
    ts_ms: IntArray
    hashes: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    profile_raw: bytes | None = None  # read for a user with fewer history entries than the profile fades over

    def with_session(self, posted: Sequence[str], now_ms: int) -> UserReply:
        """The history followed by ``posted`` (newest last) as clicks (weight 1) at ``now_ms``."""
        n = len(posted)
        return UserReply(self.vec_raw, self.ts_raw, [*self.items, *posted],
                         np.concatenate([self.weights, np.ones(n)]),
                         np.concatenate([self.ts_ms, np.full(n, now_ms, dtype=np.int64)]), self.hashes,
                         self.profile_raw)


def _split(raw: bytes | None) -> list[str]:
    return raw.decode().split("\x1e") if raw else []


def parse_reply(reply: Sequence[object]) -> UserReply:
    """The :data:`HYBRID_STATE_LUA` answer; history entries with unreadable numbers are skipped."""
    vec, ts, items_raw, weights_raw, ts_raw, sess_raw, profile = reply[:7]
    items, weights, stamps = _split(items_raw), _split(weights_raw), _split(ts_raw)  # type: ignore[arg-type]
    try:
        w, t = np.array(weights, dtype=np.float64), np.array(stamps, dtype=np.int64)
    except ValueError:  # a malformed entry: keep the readable ones
        keep = [i for i in range(len(items)) if _numeric(weights[i], stamps[i])]
        items = [items[i] for i in keep]
        w = np.array([float(weights[i]) for i in keep], dtype=np.float64)
        t = np.array([int(stamps[i]) for i in keep], dtype=np.int64)
    hashes = {}
    for item, flat in zip(_split(sess_raw), reply[7:], strict=False):  # type: ignore[arg-type]
        pairs = list(flat)  # type: ignore[call-overload]
        hashes[item] = dict(zip(pairs[::2], pairs[1::2], strict=True))
    return UserReply(vec, ts, items[::-1], w[::-1].copy(), t[::-1].copy(), hashes,  # type: ignore[arg-type]
                     profile or None)  # type: ignore[arg-type]


def session_items(reply: Sequence[object]) -> list[str]:
    """The session items of a :data:`HYBRID_STATE_LUA` answer (whose co-visitation it read, or would read)."""
    return _split(reply[5])  # type: ignore[arg-type]


def _numeric(weight: str, ts: str) -> bool:
    try:
        float(weight), int(ts)
    except ValueError:
        return False
    return True


class LocalIndex:
    """The model's item indices, extended for this request by items the model does not know (after those
    of the shop's lists, ``base``)."""

    def __init__(self, view: View, base: LocalIndex | None = None) -> None:
        model = view.model
        self.ids: list[str] = model.item_ids if model is not None else []
        self.index: dict[str, int] = model.index if model is not None else {}
        self.n_model = len(self.ids)
        self.extra: dict[str, int] = dict(base.extra) if base is not None else {}
        self.extra_ids: list[str] = list(base.extra_ids) if base is not None else []

    def of(self, item: str) -> int:
        """The index of ``item``, assigning the next request-local one to an unknown item."""
        i = self.index.get(item)
        if i is None:
            i = self.extra.get(item)
            if i is None:
                i = self.extra[item] = self.n_model + len(self.extra_ids)
                self.extra_ids.append(item)
        return i

    def many(self, items: Iterable[str]) -> IntArray:
        # A dict lookup per item in a comprehension (a generator calling of() per item cost more than the
        # lookups); only the few items the model lacks go through of().
        names = items if isinstance(items, list) else list(items)
        get = self.index.get
        found = [get(i) for i in names]
        if None in found:
            found = [self.of(i) if x is None else x for i, x in zip(names, found, strict=True)]
        return np.array(found, dtype=np.int64)

    def id(self, i: int) -> str:
        return self.ids[i] if i < self.n_model else self.extra_ids[i - self.n_model]

    def known(self, items: Iterable[str]) -> IntArray:
        """Indices of those of ``items`` already indexed (nothing is assigned)."""
        get, extra = self.index.get, self.extra.get
        found = ((get(i) if i in self.index else extra(i)) for i in items)
        return np.fromiter((i for i in found if i is not None), dtype=np.int64)


@dataclass(frozen=True)
class Shop:
    """The shop-wide signals (trending, popular) over the view's indices, built once per view and lists."""

    index: LocalIndex
    signals: dict[str, Signal]


def shop_signals(view: View, lists: dict[str, Sequence[tuple[str, float]]]) -> Shop:
    """The trending and popular lists (best first) as signals; their items outside the model get the first
    request-local indices."""
    index = LocalIndex(view)
    return Shop(index, {name: list_signal(ranked, index) for name, ranked in lists.items()})


def list_signal(ranked: Sequence[tuple[str, float]], index: LocalIndex) -> Signal:
    """A trending or popular list (best first) as a signal over the request's indices."""
    if not ranked:
        return Signal.empty()
    return Signal(index.many(i for i, _ in ranked), np.fromiter((s for _, s in ranked), dtype=np.float64))


def personal_signal(view: View, vec: npt.NDArray[np.float32], n: int, drop: IntArray,
                    usable: npt.NDArray[np.bool_] | None) -> Signal:
    """The best ``n`` positive ALS scores among usable items outside ``drop`` (ties to the lower index):
    the candidates of :func:`models.ranking.personal_signal`, through the item index when the model has one
    (:mod:`online_api.retrieval`), else from ``vec @ factors_t``."""
    best, vals = personal_top(view, vec, n, drop, usable)
    scores = vals.astype(np.float64)
    keep = scores > 0
    return Signal(best[keep], scores[keep])


@dataclass(frozen=True)
class Request:
    """What one hybrid request asks for."""

    k: int
    exclude_seen: bool
    exclude: Sequence[str] = ()
    category: str | None = None


def hybrid_inputs(view: View, cfg: RankingConfig, reply: UserReply, now_ms: int, req: Request,
                  shop: Shop, covis: tuple[float, int], vec: npt.NDArray[np.float32] | None,
                  content: Callable[[str], Sequence[tuple[str, float]]] | None = None,
                  arrivals: Signal | None = None) -> tuple[RankingInputs, LocalIndex]:
    """The ranking inputs of one request, through :func:`models.ranking.build_inputs` as the evaluation builds
    them; ``covis`` is (half-life s, top n) of the stored neighbours. ``content`` gives an item's content
    neighbours: they stand in for the co-visitation neighbours of a session item that has none (a new item
    nobody viewed with anything yet), ranked with the co-visitation weight. ``arrivals`` is the ``content``
    source (new items like the user's history, over the model's indices), when there is a content model."""
    cfg = cfg if cfg.exclude_seen == req.exclude_seen else _with_exclude_seen(cfg, req.exclude_seen)
    index = LocalIndex(view, shop.index)
    items = index.many(reply.items)
    hashes = {index.of(it): raw for it, raw in reply.hashes.items()}

    def neighbours(i: int) -> tuple[IntArray, F64]:
        pairs: Sequence[tuple[str, float]] = parse_neighbours(hashes.get(i, {}), now_ms, covis[0], covis[1])
        if not pairs and content is not None:
            pairs = content(index.id(i))
        return index.many(p for p, _ in pairs), np.fromiter((s for _, s in pairs), dtype=np.float64)

    rep_idx, rep_score = repeat_profile(items, reply.ts_ms, reply.weights, now_ms, cfg.repeat_half_life_s)
    signals = dict(shop.signals)
    user = UserState(None, items, reply.ts_ms, Signal(rep_idx, rep_score))
    seen = distinct(items) if req.exclude_seen else EMPTY
    built = build_inputs(user, now_ms, None, None, neighbours, signals, seen, cfg, content=arrivals)
    blocked = _blocked(view, index, built, req)
    drop = union(blocked, seen)
    usable = _usable(view, req.category)
    out = dict(built.signals)
    if vec is not None and view.model is not None:
        out["personal"] = personal_signal(view, vec, cfg.candidates, drop, usable)
    stats = view.model.item_stats if view.model is not None else None
    return with_signals(built, out, blocked, stats), index


def _with_exclude_seen(cfg: RankingConfig, exclude_seen: bool) -> RankingConfig:
    from dataclasses import replace

    return replace(cfg, exclude_seen=exclude_seen)


def _usable(view: View, category: str | None) -> npt.NDArray[np.bool_] | None:
    """Model items a personal candidate may be: available ones (of ``category`` when given)."""
    if category is None or view.model is None:
        return None
    usable = np.zeros(len(view.model.item_ids), dtype=np.bool_)
    usable[view.category_idx.get(category, EMPTY)] = True
    if view.available_mask is not None:
        usable &= view.available_mask
    return usable


def _blocked(view: View, index: LocalIndex, built: RankingInputs, req: Request) -> IntArray:
    """The candidates (of every signal but personal, which masks its own) that are unavailable or excluded,
    and with a category every one outside it: blocking only candidates keeps the sets small."""
    cand = union(EMPTY, *(s.idx for s in built.signals.values()))
    inside = cand < index.n_model
    parts = [index.known(req.exclude)]
    if view.available_mask is not None:
        model_cand = cand[inside]
        parts.append(model_cand[~view.available_mask[model_cand]])
    if index.extra_ids:
        parts.append(np.array([index.extra[i] for i in index.extra_ids if i in view.unavailable], dtype=np.int64))
    if req.category is not None:
        cat = req.category
        in_cat = np.zeros(index.n_model, dtype=np.bool_)
        in_cat[view.category_idx.get(cat, EMPTY)] = True
        parts.append(cand[inside][~in_cat[cand[inside]]])
        parts.append(np.array([i for i in cand[~inside].tolist() if view.category_of.get(index.id(i)) != cat],
                              dtype=np.int64))
    return union(*parts).astype(np.int64)


SOURCE_OF = {s.value: s for s in Source}


def ranked_items(ranking: Ranking, index: LocalIndex) -> list[Ranked]:
    """A ranking as the answer's items, each with its dominant source."""
    return [Ranked(index.id(i), round(s, 6), SOURCE_OF[src])
            for i, s, src in zip(ranking.items.tolist(), ranking.scores.tolist(), ranking.sources, strict=True)]
