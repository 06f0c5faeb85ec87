// streamrec storefront: talks to the streamrec API of the origin that served it (docs/storefront.md).
// Plain browser JavaScript, no build step and no external assets.
"use strict";

const PAGE_SIZE = 24;
const RAIL_K = 10;
const AFTER_EVENT_MS = [0, 300, 700]; // extra refreshes right after an event: the worker needs ~0.1-0.5 s
const CATEGORY_HUES = {
  books: 28, electronics: 212, garden: 130, toys: 330, kitchen: 12, sports: 190, beauty: 300, music: 262,
  fashion: 350, games: 160, grocery: 45, outdoor: 100, office: 230, pets: 75, health: 175, automotive: 0,
};

const state = {
  cfg: null,
  user: null,
  anonId: null,
  sessionId: null,
  category: null, // selected tab (null: all)
  offset: 0,
  total: 0,
  items: new Map(), // item_id -> catalogue entry, filled from every listing and lookup
  recsKey: "",
  trendKey: "",
  newKey: null,
  onRail: new Set(),
  modalItem: null,
  refreshing: false,
  refreshAgain: false,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------- ids
function uuid4() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context (https or localhost); getRandomValues works everywhere.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function stored(key, make, storage = localStorage) {
  let value = null;
  try { value = storage.getItem(key); } catch (_) { /* storage disabled: a fresh id per page load */ }
  if (!value) {
    value = make();
    try { storage.setItem(key, value); } catch (_) { /* ignore */ }
  }
  return value;
}

// ---------------------------------------------------------------------------------------------- API
// The ingest key goes on events only: it is collector-only, so reads never need it (or accept it).
function headers(write) {
  const h = { Accept: "application/json" };
  if (write && state.cfg && state.cfg.ingest_key) h["X-API-Key"] = state.cfg.ingest_key;
  if (write) h["Content-Type"] = "application/json";
  return h;
}

async function getJSON(path) {
  const res = await fetch(path, { headers: headers(false), cache: "no-store" });
  if (!res.ok) {
    const err = new Error(`${res.status} ${path}`);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

// Catalogue entries for ids the page has not seen yet (rails name items the grid has not listed).
async function ensureItems(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.items.has(id));
  for (let i = 0; i < missing.length; i += 100) {
    const chunk = missing.slice(i, i + 100);
    const page = await getJSON(`/v1/items?ids=${encodeURIComponent(chunk.join(","))}`);
    for (const item of page.items) state.items.set(item.item_id, item);
    for (const id of chunk) if (!state.items.has(id)) state.items.set(id, { item_id: id, category: null, attributes: {} });
  }
}

// An event for the collector. The event_id is made here, so a retry after a 503 is applied once.
async function sendEvent(type, itemId) {
  if (!state.cfg.ingest_key) {
    toast("This page has no ingest key: events are off (set STREAMREC_STOREFRONT_INGEST_KEY to one of STREAMREC_API_INGEST_KEYS)", true);
    return false;
  }
  const item = state.items.get(itemId) || {};
  const event = {
    event_id: uuid4(), user_id: state.user, item_id: itemId, type, ts: Date.now(), session_id: state.sessionId,
    context: { page: "storefront", category: item.category || null },
  };
  if (type === "purchase") {
    event.quantity = 1;
    const price = item.attributes && item.attributes.price;
    if (typeof price === "number" && price >= 0) event.price = price;
  }
  for (let attempt = 0; attempt < 4; attempt++) {
    let res;
    try {
      res = await fetch("/v1/events", { method: "POST", headers: headers(true), body: JSON.stringify(event) });
    } catch (_) {
      res = null;
    }
    if (res && res.status === 202) {
      refreshSoon();
      return true;
    }
    if (res && res.status !== 503) {
      const body = await res.json().catch(() => ({}));
      toast(`The collector refused the ${type}: ${(body.error && body.error.message) || res.status}`, true);
      return false;
    }
    const wait = res ? Number(res.headers.get("Retry-After") || 1) : 1;
    await sleep(Math.min(5, wait) * 1000);
  }
  toast(`Could not send the ${type}; the collector is unavailable`, true);
  return false;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------- rendering
function hueOf(category) {
  if (category in CATEGORY_HUES) return CATEGORY_HUES[category];
  let h = 0;
  for (const ch of String(category || "")) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function art(item, big) {
  const a = el("div", big ? "art big" : "art");
  const cat = item.category || "item";
  a.style.setProperty("--hue", hueOf(cat));
  a.dataset.letter = cat.charAt(0).toUpperCase();
  a.append(el("span", "cat", cat));
  return a;
}

function nameOf(item) {
  return (item.attributes && item.attributes.name) || item.item_id;
}

function priceOf(item) {
  const p = item.attributes && item.attributes.price;
  return typeof p === "number" ? `$${p.toFixed(2)}` : "";
}

function card(item, opts = {}) {
  const c = el("article", "card");
  c.tabIndex = 0;
  c.dataset.item = item.item_id;
  c.dataset.category = item.category || "";
  if (opts.source) {
    c.dataset.source = opts.source;
    c.append(el("span", `badge ${opts.source}`, opts.source));
  }
  c.append(art(item));
  const body = el("div", "body");
  body.append(el("div", "name", nameOf(item)));
  const row = el("div", "row");
  row.append(el("span", "price", priceOf(item)));
  if (!opts.noBuy) {
    const buy = el("button", "buy", "Buy");
    buy.type = "button";
    buy.disabled = !state.cfg.ingest_key;
    buy.addEventListener("click", (ev) => { ev.stopPropagation(); buyItem(item.item_id, buy); });
    row.append(buy);
  }
  body.append(row);
  c.append(body);
  const open = () => openProduct(item.item_id);
  c.addEventListener("click", open);
  c.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
  return c;
}

function renderRail(container, entries, emptyText, fresh) {
  container.replaceChildren();
  if (!entries.length) {
    container.append(el("div", "empty", emptyText));
    return;
  }
  for (const { id, source } of entries) {
    const c = card(state.items.get(id) || { item_id: id, attributes: {} }, { source });
    if (fresh && !fresh.has(id)) c.classList.add("fresh");
    container.append(c);
  }
}

function toast(text, error = false) {
  const t = el("div", error ? "toast error" : "toast", text);
  $("toasts").append(t);
  setTimeout(() => t.remove(), 3300);
}

// Reads that need a key cannot work here: the page's key is collector-only.
function readProblem(err) {
  if ((err.status === 401 || err.status === 403) && state.cfg && state.cfg.read_key_required) {
    return "This API requires a key for reads (STREAMREC_API_READ_KEYS_REQUIRED) and the page's key may only post events: serve the storefront from an API with open reads.";
  }
  return "";
}

function notice(text) {
  const n = $("notice");
  n.hidden = !text;
  n.textContent = text || "";
}

// ---------------------------------------------------------------------------------------------- rails
async function refreshRails() {
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    const user = state.user;
    const cat = state.category ? `&category=${encodeURIComponent(state.category)}` : "";
    const [recs, trending, arrivals] = await Promise.all([
      getJSON(`/v1/users/${encodeURIComponent(user)}/recommendations?k=${RAIL_K}`),
      getJSON(`/v1/trending?window=1h&k=${RAIL_K}${cat}`),
      getJSON(`/v1/users/${encodeURIComponent(user)}/new-arrivals?k=${RAIL_K}`),
    ]);
    if (user !== state.user) return; // the visitor switched users meanwhile
    await ensureItems([...recs.items.map((i) => i.item_id), ...trending.items.map((i) => i.item_id),
      ...arrivals.items.map((i) => i.item_id)]);
    $("model-version").textContent = recs.model_version || "none yet";
    $("live-dot").className = "dot on";
    const age = recs.vector_age_s;
    $("recs-meta").textContent = recs.personalized
      ? `personal · your profile was updated ${age === null ? "" : age < 90 ? `${age.toFixed(1)} s ago` : `${Math.round(age / 60)} min ago`}`
      : "not personal yet: trending and popular items (click a few products)";
    const recsKey = recs.items.map((i) => `${i.item_id}:${i.source}`).join(",");
    if (recsKey !== state.recsKey) {
      const before = state.onRail;
      state.onRail = new Set(recs.items.map((i) => i.item_id));
      renderRail($("recs"), recs.items.map((i) => ({ id: i.item_id, source: i.source })),
        "Nothing to recommend yet.", state.recsKey ? before : null);
      state.recsKey = recsKey;
    }
    // New arrivals: items new since the refit (metadata alone makes them recommendable), for this visitor.
    $("new-meta").textContent = arrivals.personalized ? "new since the last refit, picked for you"
      : "new since the last refit";
    const newKey = arrivals.items.map((i) => i.item_id).join(",");
    if (newKey !== state.newKey) {
      renderRail($("new-arrivals"), arrivals.items.map((i) => ({ id: i.item_id, source: null })),
        "Nothing new since the last refit.");
      state.newKey = newKey;
    }
    $("trending-meta").textContent = state.category ? `last hour in ${state.category}` : "last hour";
    const trendKey = `${state.category}|${trending.items.map((i) => i.item_id).join(",")}`;
    if (trendKey !== state.trendKey) {
      renderRail($("trending"), trending.items.map((i) => ({ id: i.item_id, source: null })),
        "Nothing is trending in the last hour.");
      state.trendKey = trendKey;
    }
    notice(state.cfg.ingest_key ? "" : "Read-only: the server has no storefront ingest key, so clicks and purchases are not sent.");
  } catch (err) {
    $("live-dot").className = "dot off";
    notice(readProblem(err) || `The API did not answer (${err.message}); retrying.`);
  } finally {
    state.refreshing = false;
    if (state.refreshAgain) {
      state.refreshAgain = false;
      setTimeout(refreshRails, 0);
    }
  }
}

function refreshSoon() {
  for (const ms of AFTER_EVENT_MS) setTimeout(refreshRails, ms);
}

async function poll() {
  if (!document.hidden) await refreshRails();
  setTimeout(poll, state.cfg.poll_ms);
}

// ---------------------------------------------------------------------------------------------- catalogue
async function loadCategories() {
  const { categories } = await getJSON("/v1/categories");
  const tabs = $("tabs");
  tabs.replaceChildren();
  const total = categories.reduce((n, c) => n + c.items, 0);
  for (const c of [{ category: null, items: total }, ...categories]) {
    const t = el("button", "tab", c.category || "All");
    t.type = "button";
    t.setAttribute("role", "tab");
    t.dataset.category = c.category || "";
    t.setAttribute("aria-selected", String(c.category === state.category));
    t.append(el("span", "n", String(c.items)));
    t.addEventListener("click", () => selectCategory(c.category));
    tabs.append(t);
  }
}

async function selectCategory(category) {
  state.category = category;
  state.offset = 0;
  for (const t of $("tabs").children) t.setAttribute("aria-selected", String((t.dataset.category || null) === category));
  await loadGrid();
  refreshRails();
}

async function loadGrid() {
  const cat = state.category ? `&category=${encodeURIComponent(state.category)}` : "";
  const page = await getJSON(`/v1/items?limit=${PAGE_SIZE}&offset=${state.offset}${cat}`);
  state.total = page.total;
  const grid = $("grid");
  grid.replaceChildren();
  for (const item of page.items) {
    state.items.set(item.item_id, item);
    grid.append(card(item));
  }
  if (!page.items.length) grid.append(el("div", "empty", "No items in the catalogue yet (run streamrec simulate --catalog)."));
  const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
  $("page-info").textContent = `page ${Math.floor(state.offset / PAGE_SIZE) + 1} of ${pages} · ${page.total} items`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + PAGE_SIZE >= page.total;
}

// ---------------------------------------------------------------------------------------------- product
async function openProduct(itemId) {
  state.modalItem = itemId;
  const item = state.items.get(itemId) || { item_id: itemId, attributes: {} };
  $("product-art").replaceWith(Object.assign(art(item, true), { id: "product-art" }));
  $("product-category").textContent = item.category || "";
  $("product-name").textContent = nameOf(item);
  $("product-price").textContent = priceOf(item);
  $("product-hint").textContent = `item ${itemId} · viewing it sent a click event`;
  $("product-buy").disabled = !state.cfg.ingest_key;
  $("similar").replaceChildren(el("div", "empty", "…"));
  $("because").replaceChildren();
  const dialog = $("product");
  if (!dialog.open) dialog.showModal();
  sendEvent("click", itemId);
  await Promise.all([loadSimilar(itemId), loadBecause(itemId)]);
}

// "Customers who viewed this also viewed": the item's co-visitation neighbours (kept by the worker, so a new
// item has them within seconds of its first views); without any yet, the blend of co-visitation and factors.
async function similarOf(itemId) {
  const base = `/v1/items/${encodeURIComponent(itemId)}/similar?k=6`;
  try {
    const covis = await getJSON(`${base}&kind=covisitation`);
    if (covis.items.length) return covis;
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  return getJSON(`${base}&kind=blend`);
}

async function loadSimilar(itemId) {
  try {
    const res = await similarOf(itemId);
    await ensureItems(res.items.map((i) => i.item_id));
    if (state.modalItem !== itemId) return;
    const box = $("similar");
    box.replaceChildren();
    for (const s of res.items) box.append(card(state.items.get(s.item_id), { noBuy: true }));
    if (!res.items.length) box.append(el("div", "empty", "No similar items."));
  } catch (err) {
    if (state.modalItem === itemId) {
      $("similar").replaceChildren(el("div", "empty", err.status === 404
        ? "This item is new: customers' views of it show here within seconds."
        : "Similar items are unavailable right now."));
    }
  }
}

// "Because you viewed …": the explain endpoint names the visitor's interactions that contributed most to
// this item's predicted score.
async function loadBecause(itemId) {
  const box = $("because");
  try {
    const res = await getJSON(`/v1/users/${encodeURIComponent(state.user)}/recommendations/${encodeURIComponent(itemId)}/explain?n=5`);
    let parts = res.contributions.filter((c) => c.item_id !== itemId && c.contribution > 0);
    const total = parts.reduce((n, c) => n + c.contribution, 0) || 1;
    parts = parts.filter((c) => c.contribution / total >= 0.02); // leave out what hardly mattered
    await ensureItems(parts.map((c) => c.item_id));
    if (state.modalItem !== itemId) return;
    $("because-title").textContent = parts.length
      ? `Because you viewed ${nameOf(state.items.get(parts[0].item_id))}${parts.length > 1 ? " and more" : ""}`
      : "Because you viewed …";
    const list = el("div", "because");
    for (const c of parts) {
      const line = el("div", "line");
      const link = el("span", "item-link", nameOf(state.items.get(c.item_id)));
      link.addEventListener("click", () => openProduct(c.item_id));
      const bar = el("div", "bar");
      const fill = el("i");
      fill.style.width = `${Math.round((100 * c.contribution) / total)}%`;
      bar.append(fill);
      line.append(link, bar, el("span", "pct", `${Math.round((100 * c.contribution) / total)}%`));
      list.append(line);
    }
    box.replaceChildren(parts.length ? list : el("div", "empty", "Nothing you viewed explains this item yet."));
  } catch (err) {
    if (state.modalItem === itemId) {
      $("because-title").textContent = "Because you viewed …";
      box.replaceChildren(el("div", "empty", err.status === 404
        ? "Browse a few products: we will explain picks from what you viewed."
        : "Explanations are unavailable right now."));
    }
  }
}

async function buyItem(itemId, button) {
  if (button) button.disabled = true;
  const ok = await sendEvent("purchase", itemId);
  if (ok) toast(`Bought ${nameOf(state.items.get(itemId) || { item_id: itemId })}`);
  if (button) setTimeout(() => { button.disabled = !state.cfg.ingest_key; }, 800);
}

// ---------------------------------------------------------------------------------------------- users
function setupUsers() {
  const select = $("user-select");
  const options = [[state.anonId, `you (${state.anonId.slice(0, 13)}…)`],
    ...state.cfg.simulated_users.map((u) => [u, `simulated user ${u}`])];
  for (const [value, label] of options) {
    const o = el("option", null, label);
    o.value = value;
    select.append(o);
  }
  select.value = state.user;
  if (select.value !== state.user) state.user = state.anonId;
  select.addEventListener("change", () => {
    state.user = select.value;
    localStorage.setItem("streamrec.user", state.user);
    state.recsKey = "";
    $("recs").replaceChildren();
    refreshRails();
  });
}

// ---------------------------------------------------------------------------------------------- start
async function main() {
  state.cfg = await getJSON("/storefront/config.json");
  state.anonId = stored("streamrec.anon", () => `anon-${uuid4()}`);
  state.sessionId = stored("streamrec.session", () => `s-${uuid4()}`, sessionStorage);
  state.user = localStorage.getItem("streamrec.user") || state.anonId;
  setupUsers();
  $("product-buy").addEventListener("click", () => buyItem(state.modalItem, $("product-buy")));
  $("product").addEventListener("close", () => { state.modalItem = null; });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadGrid(); });
  $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; loadGrid(); });
  await Promise.all([loadCategories(), loadGrid()]);
  document.body.dataset.ready = "1";
  poll();
  setInterval(() => loadCategories().catch(() => {}), 30000); // new items arrive over time
}

main().catch((err) => notice(readProblem(err) || `The storefront could not start: ${err.message}`));
