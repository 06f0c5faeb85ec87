"""A storefront traffic generator: realistic click, add_to_cart and purchase events, deterministic under a seed.

Users have latent tastes over item categories (Dirichlet), item popularity within a category is
Zipf-skewed, some clicks are followed by an add_to_cart of the same item and some add_to_carts by a
purchase (purchases are much rarer than clicks), a few purchases come without either, and new
users and new items appear over time. It is the demo's data source and the tests' and benchmarks'.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from streamrec.events import Event, EventType, now_ms

CATEGORIES = [
    "books", "electronics", "garden", "toys", "kitchen", "sports", "beauty", "music",
    "fashion", "games", "grocery", "outdoor", "office", "pets", "health", "automotive",
]
_ADJ = ["classic", "smart", "eco", "deluxe", "mini", "pro", "vintage", "urban", "cosy", "bold", "swift", "pure"]
_NOUN = {
    "books": "novel", "electronics": "headphones", "garden": "planter", "toys": "puzzle", "kitchen": "pan",
    "sports": "racket", "beauty": "serum", "music": "vinyl", "fashion": "jacket", "games": "board game",
    "grocery": "coffee", "outdoor": "tent", "office": "notebook", "pets": "chew toy", "health": "vitamins",
    "automotive": "dash cam",
}


@dataclass(frozen=True)
class SimConfig:
    """Shape of the simulated storefront."""

    seed: int = 42
    users: int = 2_000
    items: int = 1_000
    categories: int = 10
    zipf_a: float = 1.1
    taste_concentration: float = 0.25  # Dirichlet alpha: small means each user sticks to few categories
    cart_per_click: float = 0.08  # share of clicks later followed by an add_to_cart of the same item
    purchase_per_cart: float = 0.5  # share of add_to_carts later followed by a purchase (0.04 per click)
    direct_purchase: float = 0.003  # share of events that are purchases without a prior click
    new_user_share: float = 0.01  # share of events from a user never seen before
    new_item_every: int = 400  # one new item enters the catalogue every N events
    user_activity_a: float = 0.8  # Zipf exponent of how active users are


@dataclass
class _Category:
    items: list[str] = field(default_factory=list)
    cum: list[float] = field(default_factory=list)

    def add(self, item: str, weight: float) -> None:
        self.items.append(item)
        self.cum.append((self.cum[-1] if self.cum else 0.0) + weight)


class Storefront:
    """The simulated world. Iterate :meth:`events` for an endless, seeded event stream."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.cfg = config or SimConfig()
        if not 1 <= self.cfg.categories <= len(CATEGORIES):
            raise ValueError(f"categories must be between 1 and {len(CATEGORIES)}")
        self.rng = random.Random(self.cfg.seed)
        self.category_names = CATEGORIES[: self.cfg.categories]
        self.cats = {c: _Category() for c in self.category_names}
        self.item_category: dict[str, str] = {}
        self.item_price: dict[str, float] = {}
        self.users: list[str] = []
        self.user_cum: list[float] = []
        self.taste: dict[str, list[float]] = {}
        # (due step, user, item, type): the add_to_carts and purchases that follow earlier events
        self.pending: deque[tuple[int, str, str, EventType]] = deque()
        self.step = 0
        for _ in range(self.cfg.items):
            self._new_item()
        for _ in range(self.cfg.users):
            self._new_user()

    # ---------------------------------------------------------------------------------- world
    def _new_item(self) -> str:
        item = f"i{len(self.item_category)}"
        cat = self.rng.choice(self.category_names)
        rank = len(self.cats[cat].items) + 1
        # Zipf by arrival rank within the category; new items get a freshness boost so they show up.
        weight = 1.0 / rank**self.cfg.zipf_a
        if self.step > 0:
            weight = max(weight, self.rng.uniform(0.05, 0.5))
        self.cats[cat].add(item, weight)
        self.item_category[item] = cat
        self.item_price[item] = round(self.rng.uniform(2, 200), 2)
        return item

    def _new_user(self) -> str:
        user = f"u{len(self.users)}"
        gammas = [self.rng.gammavariate(self.cfg.taste_concentration, 1.0) for _ in self.category_names]
        total = sum(gammas) or 1.0
        self.taste[user] = list(itertools.accumulate(g / total for g in gammas))
        self.users.append(user)
        activity = 1.0 / len(self.users) ** self.cfg.user_activity_a
        self.user_cum.append((self.user_cum[-1] if self.user_cum else 0.0) + activity)
        return user

    def _pick_user(self) -> str:
        if self.rng.random() < self.cfg.new_user_share:
            return self._new_user()
        x = self.rng.random() * self.user_cum[-1]
        return self.users[bisect.bisect_right(self.user_cum, x)]

    def _pick_item(self, user: str) -> str:
        cum = self.taste[user]
        idx = min(bisect.bisect_right(cum, self.rng.random() * cum[-1]), len(cum) - 1)
        cat = self.cats[self.category_names[idx]]
        if not cat.items:  # a category may still be empty in a tiny catalogue
            return self.rng.choice(list(self.item_category))
        x = self.rng.random() * cat.cum[-1]
        return cat.items[min(bisect.bisect_right(cat.cum, x), len(cat.items) - 1)]

    def catalog(self) -> list[dict[str, Any]]:
        """Metadata of every item so far: id, category, a display name and a price."""
        out = []
        for n, (item, cat) in enumerate(self.item_category.items()):
            name = f"{_ADJ[n % len(_ADJ)].title()} {_NOUN.get(cat, 'item')} {n}"
            out.append({"item_id": item, "category": cat, "name": name, "price": self.item_price[item]})
        return out

    # ---------------------------------------------------------------------------------- events
    def _event(self, user: str, item: str, etype: EventType, ts: int) -> Event:
        extra: dict[str, Any] = {}
        if etype is EventType.PURCHASE:
            extra = {"quantity": 1 + int(self.rng.random() < 0.2), "price": self.item_price[item]}
        return Event(
            event_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
            user_id=user,
            item_id=item,
            type=etype,
            ts=ts,
            session_id=f"s-{user}-{ts // 1_800_000}",
            context={"category": self.item_category[item]},
            **extra,
        )

    def events(self, clock: Callable[[], int] | None = None) -> Iterator[Event]:
        """Endless event stream. ``clock`` gives each event's time (epoch ms); default: the wall clock."""
        clock = clock or now_ms
        while True:
            self.step += 1
            if self.step % self.cfg.new_item_every == 0:
                self._new_item()
            if self.pending and self.pending[0][0] <= self.step:
                _, user, item, etype = self.pending.popleft()
                if etype is EventType.ADD_TO_CART and self.rng.random() < self.cfg.purchase_per_cart:
                    self.pending.append((self.step + self.rng.randint(1, 10), user, item, EventType.PURCHASE))
                yield self._event(user, item, etype, clock())
                continue
            user = self._pick_user()
            item = self._pick_item(user)
            if self.rng.random() < self.cfg.direct_purchase:
                yield self._event(user, item, EventType.PURCHASE, clock())
                continue
            if self.rng.random() < self.cfg.cart_per_click:
                self.pending.append((self.step + self.rng.randint(1, 10), user, item, EventType.ADD_TO_CART))
            yield self._event(user, item, EventType.CLICK, clock())


def sim_clock(start_ms: int, rate: float) -> Callable[[], int]:
    """A clock that advances ``1/rate`` seconds per call from ``start_ms`` (for simulated history)."""
    counter = itertools.count()
    return lambda: start_ms + int(next(counter) * 1000 / rate)


@dataclass
class SimStats:
    """What a simulation run produced."""

    events: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "clicks": self.by_type["click"], "add_to_carts": self.by_type["add_to_cart"],
                "purchases": self.by_type["purchase"],
                "seconds": round(self.seconds, 2), "events_per_s": round(self.events / max(self.seconds, 1e-9), 1)}


def run(
    emit: Callable[[Event], None],
    *,
    rate: float,
    count: int | None = None,
    duration_s: float | None = None,
    store: Storefront | None = None,
    clock: Callable[[], int] | None = None,
    progress: Callable[[SimStats], None] | None = None,
    progress_every_s: float = 5.0,
    should_stop: Callable[[], bool] | None = None,
) -> SimStats:
    """Emit events at ``rate`` per second (0 or less: as fast as possible) until ``count`` or ``duration_s``."""
    if count is None and duration_s is None:
        raise ValueError("give a count or a duration")
    store = store or Storefront()
    stats = SimStats()
    start = time.monotonic()
    last_report = start
    for event in store.events(clock):
        if (count is not None and stats.events >= count) or (
            duration_s is not None and time.monotonic() - start >= duration_s
        ) or (should_stop is not None and should_stop()):
            break
        emit(event)
        stats.events += 1
        stats.by_type[event.type.value] += 1
        if rate > 0:
            ahead = stats.events / rate - (time.monotonic() - start)
            if ahead > 0.002:
                time.sleep(ahead)
        now = time.monotonic()
        if progress is not None and now - last_report >= progress_every_s:
            stats.seconds = now - start
            progress(stats)
            last_report = now
    stats.seconds = time.monotonic() - start
    return stats
