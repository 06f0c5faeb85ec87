"""The worker's in-memory state: item ids, cached user histories and the current model version.

Nothing here talks to Redis. Redis stays the source of truth; these caches only save reading and
parsing data the worker wrote itself:

* :class:`UserCache` keeps each recently seen user's history as numpy arrays, tagged with the user's
  ``user_events`` count. A batch reads the counts (one HMGET) and trusts a cached history only when
  its count matches; otherwise (another worker owned the partition meanwhile, or the entry was
  evicted) it reads the history from Redis. The count changes in the same MULTI/EXEC as the history,
  so a matching count means an identical history.
* :class:`ModelState` is one published version plus the items folded in since its refit, with a
  :class:`models.foldin.FoldInSolver` built once per version (and rebuilt when new items arrive).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from models.foldin import FoldInSolver
from models.ids import IdMap
from streamrec.store.models import ModelVersion
from streamrec.store.users import Interaction

if TYPE_CHECKING:
    from models.covisitation import CovisConfig
    from models.weighting import WeightingConfig
    from streamrec.settings import Settings
    from streamrec.store import RedisStore

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
_EMPTY = np.zeros((0, 3), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's history, oldest first, as one n×3 float64 array: interned item id, stored weight, ts (ms).

    One array rather than three halves the numpy calls per user (ids and epoch ms are exact in float64).
    """

    count: int  # the user's user_events count this history corresponds to
    data: F64

    @staticmethod
    def empty() -> UserState:
        return UserState(0, _EMPTY)

    @staticmethod
    def from_history(count: int, history: Sequence[Interaction], items: IdMap) -> UserState:
        """From a Redis history (newest first, as :func:`streamrec.store.users.read_histories` gives)."""
        if not history:
            return UserState(count, _EMPTY)
        rows = [(items.add(i.item), i.weight, i.ts_ms) for i in reversed(history)]
        return UserState(count, np.array(rows, dtype=np.float64))

    @property
    def items(self) -> I32:
        return self.data[:, 0].astype(np.int32)

    @property
    def weights(self) -> F64:
        return self.data[:, 1]

    @property
    def ts(self) -> F64:
        return self.data[:, 2]

    def extended(self, rows: F64, cap: int) -> UserState:
        """This history with ``rows`` (n×3, oldest first) appended, the oldest dropped beyond ``cap``."""
        return UserState(self.count + len(rows), np.concatenate([self.data, rows])[-cap:])


class UserCache:
    """Least-recently-used map user -> :class:`UserState`, bounded in users."""

    def __init__(self, max_users: int) -> None:
        self.max_users = max(0, max_users)
        self._d: OrderedDict[str, UserState] = OrderedDict()

    def get(self, user: str, count: int) -> UserState | None:
        """The cached state if it matches ``count`` (the user's count in Redis), else None."""
        state = self._d.get(user)
        if state is None or state.count != count:
            return None
        self._d.move_to_end(user)
        return state

    def put_many(self, states: Iterable[tuple[str, UserState]]) -> None:
        d = self._d
        for user, state in states:
            d[user] = state
            d.move_to_end(user)
        while len(d) > self.max_users:
            d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    def __contains__(self, user: object) -> bool:
        return user in self._d

    def __len__(self) -> int:
        return len(self._d)


class ModelState:
    """The model version the worker folds against: its solver, new items, and id translation.

    Interned item ids (see :class:`models.ids.IdMap`, shared by the whole worker) are translated to
    rows of the solver's factor matrix: the version's items first, then its new items in the order
    this worker learnt them. ``-1`` marks an item the version does not know (yet).
    """

    def __init__(self, model: ModelVersion, items: IdMap, regularization: float, alpha: float) -> None:
        self.model = model
        self.version = model.version
        self.regularization = regularization
        self.alpha = alpha
        self._items = items
        self._base_solver = FoldInSolver(model.item_factors, model.gram, regularization, alpha)
        self.solver = self._base_solver
        self.new_items: dict[str, F32] = {}  # vectors of items folded in after the refit
        self._new_order: list[str] = []
        self._solver_items = 0  # how many of _new_order the solver already holds
        self._rows = np.full(0, -1, dtype=np.int32)
        self._known = 0  # interned ids translated so far
        self._dirty = False  # new items the solver does not hold yet
        self.user_gram: F64 | None = None  # XᵀX of the version's users, loaded when an item is folded in
        self.solver_built_at = time.monotonic()

    @property
    def factors(self) -> int:
        return self.model.factors

    def is_base_item(self, item: str) -> bool:
        return item in self.model.item_index

    def rows_of(self, interned: I32) -> I32:
        """Solver rows of interned item ids (``-1`` where unknown to the solver)."""
        self._sync()
        return self._rows[interned]

    def _sync(self) -> None:
        """Translate interned ids added since the last call."""
        n = len(self._items)
        if n <= self._known:
            return
        if n > len(self._rows):
            grown = np.full(max(n, 2 * len(self._rows), 1024), -1, dtype=np.int32)
            grown[: len(self._rows)] = self._rows
            self._rows = grown
        index = self.model.item_index
        for i in range(self._known, n):
            self._rows[i] = index.get(self._items.id_of(i), -1)
        self._known = n
        self._map_new_items(self._new_order[: self._solver_items], len(self.model.item_ids))

    def _map_new_items(self, names: Sequence[str], first_row: int) -> None:
        for offset, name in enumerate(names):
            idx = self._items.index(name)
            if idx is not None and idx < len(self._rows):
                self._rows[idx] = first_row + offset

    def add_new_items(self, vectors: dict[str, F32]) -> bool:
        """Record vectors of items folded in after the refit; True when any is new or changed."""
        changed = False
        for item, vec in vectors.items():
            if self.is_base_item(item):
                continue
            old = self.new_items.get(item)
            if old is None:
                self._new_order.append(item)
            if old is None or not np.array_equal(old, vec):
                self.new_items[item] = np.asarray(vec, dtype=np.float32)
                changed = True
        self._dirty = self._dirty or changed
        return changed

    def rebuild_solver_if_due(self, min_interval_s: float, force: bool = False) -> bool:
        """Rebuild the solver with every known new item (at most once per ``min_interval_s``).

        Rebuilding copies the projected factors (tens of MB at 50,000 items), so items learnt in
        between are ignored by fold-ins for up to ``min_interval_s``.
        """
        if not self._dirty or (not force and time.monotonic() - self.solver_built_at < min_interval_s):
            return False
        block = np.stack([self.new_items[name] for name in self._new_order])
        self.solver = self._base_solver.with_extra_items(block)
        self._solver_items = len(self._new_order)
        self._sync()
        self._map_new_items(self._new_order, len(self.model.item_ids))
        self.solver_built_at = time.monotonic()
        self._dirty = False
        return True


class WorkerState(Protocol):
    """What a batch reads and updates of the worker that applies it (:class:`~.processor.BatchProcessor`)."""

    settings: Settings
    store: RedisStore
    clock: Callable[[], int]
    items: IdMap
    users: UserCache
    model: ModelState | None
    weighting: WeightingConfig
    categories: dict[str, str | None]  # item -> catalogue category, cached
    categories_at: float  # monotonic time the category cache was last cleared
    new_item_refresh_s: float
    covis: CovisConfig | None  # co-visitation kept by the worker (None: switched off)

    def settle_shared(self, timeout_s: float | None = None) -> bool:
        """Wait for the worker's outbox drains in flight (Redis Cluster)."""
        ...
