"""Hostile input through the real API and the real worker: oversized bodies, deeply nested JSON, huge ``k``,
invalid UTF-8, ids with control characters, malformed framing, a flood of one user's events, and poison
records written straight to Kafka. Each gets a 4xx or a dead letter, never a crash, a hang or a 5xx.

Quick enough for ``make test``; ``make reliability`` runs it too and reports its figures.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from online_api.server import ApiProcess
from ops.bench_stream import publish_model
from stream_processors import dead_letters as dl
from streamrec.events import now_ms
from streamrec.kafka_io import EventProducer
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import event_counts, read_histories
from tests.helpers.dead_letters import read_dead_letters
from tests.helpers.processes import Worker, wait_applied
from tests.reliability.procs import metric_sum
from tests.reliability.record import record

KEY = "hostile-key-0123456789"
ITEMS = 200
FLOOD_BATCHES = 20  # x 500 events of one user


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": "u-1", "item_id": "i1", "type": "click", "ts": now_ms(),
            **fields}


def raw_http(port: int, request: bytes, timeout_s: float = 15.0) -> int | None:
    """Send raw bytes as one HTTP request; the status code, or None when the server closed without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture
def system(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[Settings, ApiProcess, Worker]]:
    s = make_settings(api_keys=KEY, als_factors=8, history_cap=30, worker_batch_within_s=0.1,
                      worker_session_timeout_s=6.0, worker_metrics_port=0)
    publish_model(s, ITEMS, s.als_factors, seed=5)
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    worker = Worker(s, tmp_path, "worker")
    try:
        api.start()
        api.wait_for("/readyz")
        yield s, api, worker
    finally:
        worker.kill()
        api.stop()


def test_hostile_requests_and_records_get_4xx_or_dead_letters_never_5xx(
        system: tuple[Settings, ApiProcess, Worker], tmp_path: Path) -> None:
    s, api, worker = system
    statuses: dict[str, int | None] = {}
    keyed = {"X-API-Key": KEY}
    with httpx.Client(base_url=api.url, timeout=30) as http:
        def post(name: str, path: str, content: bytes | Iterator[bytes] | None = None, **kw: Any) -> None:
            started = time.monotonic()
            resp = http.post(path, content=content, headers={**keyed, "Content-Type": "application/json",
                                                             **kw.pop("headers", {})}, **kw)
            statuses[name] = resp.status_code
            assert time.monotonic() - started < 20, f"{name} took too long"

        def get(name: str, path: str) -> None:
            statuses[name] = http.get(path).status_code

        big = json.dumps({"events": [event(context={"pad": "x" * 250})] * 5_000}).encode()  # ~1.6 MB
        post("oversized body (Content-Length)", "/v1/events:batch", big)
        post("oversized body (chunked)", "/v1/events:batch", iter([big[i : i + 65_536]
                                                                    for i in range(0, len(big), 65_536)]))
        post("deeply nested JSON (arrays)", "/v1/events:batch", b"[" * 400_000 + b"]" * 400_000)
        post("deeply nested JSON (objects)", "/v1/events", json.dumps(event()).encode()[:-1]
             + b',"context":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}")
        nested = event(context={"a": {"b": {"c": [1, [2, [3]]]}}})
        post("deeply nested context", "/v1/events", json.dumps(nested).encode())
        post("invalid UTF-8 body", "/v1/events", b'{"event_id": "\xff\xfe", "user_id": "\xc3\x28"}')
        post("invalid UTF-8 in an id", "/v1/events", json.dumps(event()).encode().replace(b'"u-1"', b'"u\xff1"'))
        post("lone surrogate in an id", "/v1/events", json.dumps(event(user_id="u\ud800")).encode())
        post("control character in user_id", "/v1/events", json.dumps(event(user_id="a\u0000b")).encode())
        post("newline in item_id", "/v1/events", json.dumps(event(item_id="a\nb")).encode())
        post("ts = Infinity", "/v1/events", json.dumps(event(ts=float("inf"))).encode())
        post("ts = 1e400", "/v1/events", json.dumps(event()).encode().replace(b'"ts":', b'"ts":1e400,"x":'))
        post("price = NaN", "/v1/events", json.dumps(event(type="purchase", price=float("nan"))).encode())
        digits = b"9" * 5000
        post("5000-digit number", "/v1/events", json.dumps(event()).encode()[:-1] + b',"quantity":' + digits + b"}")
        post("malformed JSON", "/v1/events", b'{"event_id": ')
        post("empty body", "/v1/events", b"")
        post("JSON array instead of object", "/v1/events", b"[1, 2, 3]")
        too_many = {"events": [event() for _ in range(501)]}
        post("501 events in a batch", "/v1/events:batch", json.dumps(too_many).encode())
        post("unknown field", "/v1/events", json.dumps(event(admin=True)).encode())
        post("timestamp far in the future", "/v1/events", json.dumps(event(ts=now_ms() + 86_400_000)).encode())
        post("wrong content type", "/v1/events", json.dumps(event()).encode(), headers={"Content-Type": "text/plain"})
        statuses["PUT item with control character"] = http.put("/v1/items/a%01b", json={}, headers=keyed).status_code
        statuses["PUT item with nested attributes"] = http.put(
            "/v1/items/i1", json={"attributes": {"a": {"b": 1}}}, headers=keyed).status_code
        get("k = 10^30", "/v1/users/u-1/recommendations?k=1000000000000000000000000000000")
        get("k = 1e400", "/v1/users/u-1/recommendations?k=1e400")
        get("k = -1", "/v1/users/u-1/recommendations?k=-1")
        get("k = max_k + 1", f"/v1/users/u-1/recommendations?k={s.max_k + 1}")
        get("k on similar = 10^9", "/v1/items/i1/similar?k=1000000000")
        get("n on explain = 10^9", "/v1/users/u-1/recommendations/i1/explain?n=1000000000")
        get("NUL in the user id path", "/v1/users/a%00b/recommendations")
        get("invalid UTF-8 in the path", "/v1/users/%FF%FE/recommendations")
        get("invalid UTF-8 in the query", "/v1/trending?category=%C3%28")
        statuses["PUT item with invalid UTF-8 id"] = http.put("/v1/items/%FF", json={}, headers=keyed).status_code
        get("10,000 excluded ids", "/v1/users/u-1/recommendations?exclude=" + ",".join(f"i{i}" for i in range(10_000)))
        get("129-character user id", "/v1/users/" + "u" * 129 + "/recommendations")
        get("unknown window", "/v1/trending?window=1y")
        statuses["trailing slash with a foreign Host"] = http.get(  # no redirect to the client's Host
            "/v1/trending/", headers={"Host": "evil.example"}).status_code
        statuses["PUT item with deeply nested JSON"] = http.put(
            "/v1/items/i1", content=b"[" * 10_000 + b"]" * 10_000,
            headers={**keyed, "Content-Type": "application/json"}).status_code
    statuses["100 KB URL"] = raw_http(api.port, b"GET /v1/users/" + b"u" * 100_000 + b"/recommendations HTTP/1.1\r\n"
                                      b"Host: x\r\n\r\n")
    statuses["control character in a header"] = raw_http(
        api.port, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-API-Key: hostile\x01key\r\nContent-Length: 2\r\n\r\n{}")
    statuses["garbage request line"] = raw_http(api.port, b"\x00\xff\xfe GARBAGE\r\n\r\n")

    # A flood of one user's events through the collector: accepted, applied once each, history capped.
    flood_status: Counter[int] = Counter()
    with httpx.Client(base_url=api.url, timeout=30, headers=keyed) as http:
        for _ in range(FLOOD_BATCHES):
            body = {"events": [event(user_id="flooder", item_id=f"i{n % ITEMS}") for n in range(500)]}
            flood_status[http.post("/v1/events:batch", json=body).status_code] += 1

    # Poison records straight to Kafka: dead letters, the worker keeps going.
    good = json.loads(json.dumps(event(user_id="after-poison")))
    poison = {
        "invalid UTF-8": b'{"event_id": "\xff\xfe"}',
        "deep nesting": b"[" * 4_000 + b"]" * 4_000,  # within the 8 KB limit: the parser's recursion
        "1 MB value": b'{"pad": "' + b"x" * 1_000_000 + b'"}',
        "control character in user_id": json.dumps({**good, "user_id": "a\x07b"}).encode(),
        "ts Infinity": json.dumps({**good, "ts": float("inf")}).encode(),
        "NaN price": json.dumps({**good, "type": "purchase", "price": float("nan")}).encode(),
        "empty": b"",
        "JSON null": b"null",
        "5000-digit number": b'{"ts": ' + b"9" * 5_000 + b"}",
    }
    producer = EventProducer(s, **{"message.max.bytes": 2_000_000})
    for name, raw in poison.items():
        producer.send_raw(s.topic_clicks, name.encode(), raw)
    producer.send_raw(s.topic_clicks, b"after-poison", json.dumps(good).encode())
    assert producer.flush(30) == 0
    store = RedisStore(s)
    wait_applied(s, store, worker.alive, 120, worker.tail)
    letters = {k: h[dl.REASON] for k, h in read_dead_letters(s, len(poison)).items()}
    counts = event_counts(store, ["flooder", "after-poison"])
    history = read_histories(store, ["flooder"])["flooder"]
    api_log = (tmp_path / "api.log").read_text(errors="replace")
    figures = {
        "command": "pytest tests/integration/test_hostile_input.py",
        "requests": {name: code for name, code in statuses.items()},
        "flood": {"requests": dict(flood_status), "events_sent": FLOOD_BATCHES * 500, "applied": counts["flooder"],
                  "history_length": len(history), "history_cap": s.history_cap},
        "dead_letters": {name: letters.get(name) for name in poison},
        "valid_event_after_poison_applied": counts["after-poison"],
        "worker_alive": worker.alive(), "api_alive": api.proc is not None and api.proc.poll() is None,
        "api_unexpected_errors_logged": api_log.count("unexpected error"),
    }
    record("hostile_input", figures)
    served = [c for c in statuses.values() if c is not None]
    assert all(400 <= c < 500 for c in served), {k: v for k, v in statuses.items() if v is None or not 400 <= v < 500}
    assert statuses["oversized body (Content-Length)"] == 413 and statuses["oversized body (chunked)"] == 413
    assert {statuses[name] for name in ("deeply nested JSON (arrays)", "deeply nested JSON (objects)",
                                        "PUT item with deeply nested JSON", "malformed JSON")} == {422}
    assert statuses["trailing slash with a foreign Host"] == 404
    assert flood_status == {202: FLOOD_BATCHES}
    assert counts["flooder"] == FLOOD_BATCHES * 500 and len(history) == s.history_cap
    assert counts["after-poison"] == 1
    assert set(letters) == set(poison), letters
    assert letters["1 MB value"] == "oversized" and letters["invalid UTF-8"] == "bad_json"
    assert letters["deep nesting"] == "bad_json"
    assert letters["control character in user_id"] == "invalid_field" and letters["ts Infinity"] == "invalid_field"
    assert worker.alive() and api.proc is not None and api.proc.poll() is None
    assert metric_sum(worker.metrics(), "streamrec_worker_retries_total", 'kind="bug"') == 0
    assert "unexpected error" not in api_log and "Traceback" not in api_log
    assert httpx.get(api.url + "/readyz", timeout=10).status_code == 200
    store.close()


