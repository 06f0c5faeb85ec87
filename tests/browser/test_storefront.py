"""The storefront in a real headless Chromium against the real chain:
page → collector → Kafka → worker → Redis → API → page.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from streamrec.store.models import current_version
from streamrec.store.users import read_histories
from tests.browser.conftest import StoreSystem, publish_screenshot

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CLICKS = 4
SHIFT_WITHIN_MS = 2_000  # the promise: clicks change "Recommended for you" within two seconds

RAIL = "cs => cs.map(c => ({item: c.dataset.item, category: c.dataset.category, source: c.dataset.source}))"
# Every click is reflected (clicked items count as seen, so they leave the rail), and the clicked category
# is now the most common one on the rail (ties allowed) and more common than before.
SHIFTED = """([cat, clicked, before]) => {
  const cs = [...document.querySelectorAll('#recs .card')];
  if (cs.length < 5 || cs.some(c => clicked.includes(c.dataset.item))) return false;
  const n = {};
  for (const c of cs) n[c.dataset.category] = (n[c.dataset.category] || 0) + 1;
  return (n[cat] || 0) > before && (n[cat] || 0) >= Math.max(...Object.values(n));
}"""


def rail(page: Any) -> list[dict[str, str]]:
    return list(page.eval_on_selector_all("#recs .card", RAIL))


def post_event(page: Any, action: Any) -> dict[str, Any]:
    """Run ``action`` and return the event the page posted to the collector (asserting it was accepted)."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/v1/events")) as info:
        action()
    response = info.value
    assert response.status == 202, response.text()
    body: dict[str, Any] = response.request.post_data_json
    return body


def test_clicks_shift_recommendations_and_a_purchase_leaves_the_rail(
    storefront_system: StoreSystem, browser_page: Any, results_dir: Path
) -> None:
    page, system = browser_page, storefront_system
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(system.url)
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("() => document.querySelectorAll('#recs .card').length >= 5")

    # A new visitor: a stable anonymous id, and the trending/popular fallback (nothing personal yet).
    user = page.evaluate("localStorage.getItem('streamrec.anon')")
    assert user and user.startswith("anon-")
    assert page.input_value("#user-select") == user
    before = rail(page)
    assert {c["source"] for c in before} <= {"trending", "popular"}
    assert page.text_content("#model-version") == current_version(system.store)

    # Pick the category least present on the rail, and click through several of its products.
    categories = page.eval_on_selector_all("#tabs .tab", "ts => ts.map(t => t.dataset.category).filter(Boolean)")
    counts = Counter(c["category"] for c in before)
    target = min(categories, key=lambda c: (counts[c], categories.index(c)))
    share_before = counts[target] / len(before)
    page.click(f"#tabs .tab[data-category='{target}']")
    page.wait_for_function(
        "cat => { const cs = [...document.querySelectorAll('#grid .card')];"
        " return cs.length > 0 && cs.every(c => c.dataset.category === cat); }", arg=target)
    clicked = []
    for i in range(CLICKS):
        card = page.locator("#grid .card").nth(i)
        event = post_event(page, card.click)
        last_click = time.monotonic()
        assert event["type"] == "click" and event["user_id"] == user
        clicked.append(event["item_id"])
        page.wait_for_selector("#product[open]")
        page.keyboard.press("Escape")

    try:
        page.wait_for_function(SHIFTED, arg=[target, clicked, counts[target]], timeout=SHIFT_WITHIN_MS)
    except PlaywrightTimeout:
        history = read_histories(system.store, [user])[user]
        pytest.fail(f"the rail did not shift to {target} within {SHIFT_WITHIN_MS} ms of the last click "
                    f"{clicked}: rail {rail(page)}; the user's history in Redis now {history}")
    shift_s = time.monotonic() - last_click
    after = rail(page)
    share_after = sum(c["category"] == target for c in after) / len(after)
    print(f"\n'Recommended for you' shifted to {target}: {share_before:.0%} -> {share_after:.0%} "
          f"of the rail, {shift_s * 1000:.0f} ms after the last click was accepted")
    assert share_after > share_before
    assert any(c["source"] == "personal" for c in after)

    # Buy a recommended item straight from the rail: it leaves the rail.
    bought = next(c["item"] for c in after if c["category"] == target)
    event = post_event(page, page.locator(f"#recs .card[data-item='{bought}'] .buy").click)
    assert event["type"] == "purchase" and event["item_id"] == bought and event["quantity"] == 1
    page.wait_for_function("item => !document.querySelector(`#recs .card[data-item=\"${item}\"]`)", arg=bought,
                           timeout=SHIFT_WITHIN_MS)

    # The events went the whole way: the worker wrote them to the user's history in Redis.
    history = read_histories(system.store, [user])[user]
    assert [(h.item, h.type) for h in history][: CLICKS + 1] == \
        [(bought, "purchase"), *((i, "click") for i in reversed(clicked))]

    # The product page: similar items, and the visitor's own clicks explaining a recommended item.
    page.click("#tabs .tab[data-category='']")
    pick = next(c for c in rail(page) if c["source"] == "personal")["item"]
    post_event(page, page.locator(f"#recs .card[data-item='{pick}']").click)
    page.wait_for_selector("#similar .card")
    page.wait_for_selector("#because .line")
    because = page.eval_on_selector_all("#because .item-link", "ls => ls.map(l => l.textContent)")
    names = set(page.evaluate("ids => ids.map(i => state.items.get(i).attributes.name)", [*clicked, bought]))
    assert set(because) & names, (because, names)
    product_png = results_dir / "storefront-product.png"
    page.screenshot(path=str(product_png))
    page.keyboard.press("Escape")

    page.mouse.move(1, 1)  # a clean picture for the docs: no hovered card, no toast
    page.wait_for_function("() => !document.querySelector('#toasts .toast')")
    screenshot = results_dir / "storefront.png"
    page.screenshot(path=str(screenshot), full_page=True)
    for png in (screenshot, product_png):
        publish_screenshot(png)
    assert not errors, errors
