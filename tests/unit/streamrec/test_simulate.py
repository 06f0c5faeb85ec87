"""The simulator: deterministic, skewed, purchases rare and after clicks, users and items arriving."""

from __future__ import annotations

from collections import Counter

from streamrec.simulate import SimConfig, Storefront, run, sim_clock


def _take(n: int, seed: int = 3, **cfg: object) -> tuple[Storefront, list]:  # type: ignore[type-arg]
    store = Storefront(SimConfig(seed=seed, **cfg))  # type: ignore[arg-type]
    events = []
    run(events.append, rate=0, count=n, store=store, clock=sim_clock(1_700_000_000_000, 100))
    return store, events


def test_same_seed_same_events_other_seed_other_events() -> None:
    _, a = _take(5_000)
    _, b = _take(5_000)
    _, c = _take(5_000, seed=4)
    assert a == b
    assert a != c


def test_purchases_rare_and_mostly_after_a_click_on_the_same_item() -> None:
    _, events = _take(20_000)
    types = Counter(e.type.value for e in events)
    assert 0.01 < types["purchase"] / len(events) < 0.1
    clicked, after = set(), 0
    for e in events:
        if e.type.value == "click":
            clicked.add((e.user_id, e.item_id))
        elif (e.user_id, e.item_id) in clicked:
            after += 1
    assert after / types["purchase"] > 0.8


def test_add_to_cart_between_click_and_purchase() -> None:
    _, events = _take(20_000)
    types = Counter(e.type.value for e in events)
    assert types["purchase"] < types["add_to_cart"] < types["click"]
    clicked, carted, after_cart = set(), set(), 0
    for e in events:
        key = (e.user_id, e.item_id)
        if e.type.value == "click":
            clicked.add(key)
        elif e.type.value == "add_to_cart":
            assert key in clicked and e.quantity is None and e.price is None
            carted.add(key)
        elif key in carted:
            after_cart += 1
    assert after_cart / types["purchase"] > 0.8


def test_item_popularity_is_skewed() -> None:
    _, events = _take(20_000)
    counts = sorted(Counter(e.item_id for e in events).values(), reverse=True)
    top = sum(counts[: len(counts) // 10])
    assert top / sum(counts) > 0.3  # the top 10% of items draw far more than 10% of clicks


def test_users_follow_their_tastes() -> None:
    store, events = _take(20_000)
    per_user: dict[str, Counter[str]] = {}
    for e in events:
        per_user.setdefault(e.user_id, Counter())[store.item_category[e.item_id]] += 1
    busy = [c for c in per_user.values() if sum(c.values()) >= 30]
    share_top = sum(c.most_common(1)[0][1] / sum(c.values()) for c in busy) / len(busy)
    assert share_top > 2.0 / store.cfg.categories  # far above a uniform spread over categories


def test_new_users_and_items_appear_over_time() -> None:
    store, events = _take(20_000, users=500, items=200)
    assert len(store.users) > 500 and len(store.item_category) > 200
    late_items = {e.item_id for e in events[10_000:]} - {e.item_id for e in events[:10_000]}
    late_users = {e.user_id for e in events[10_000:]} - {e.user_id for e in events[:10_000]}
    assert late_items and late_users
    assert all(e.context and e.context["category"] == store.item_category[e.item_id] for e in events[:100])


def test_rate_limit_is_respected() -> None:
    stats = run(lambda e: None, rate=2_000, count=1_000)
    assert stats.seconds >= 0.45
