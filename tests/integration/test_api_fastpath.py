"""The recommendations fast lane through HTTP: a real `streamrec api` process on real Redis.

Plainly valid requests are answered by online_api.fastpath, the others by the FastAPI route; the same
question asked both ways (``k=10`` and ``k=010``, which only FastAPI accepts) must get the same answer.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from online_api.server import ApiProcess
from ops.bench_api import BenchConfig, publish_synthetic
from streamrec.store import RedisStore
from tests.integration.services import isolated_settings


@pytest.fixture(scope="module")
def api(endpoints: tuple[str, str]) -> Iterator[tuple[str, list[str]]]:
    settings = isolated_settings(*endpoints, blend_weight=0.3)
    store = RedisStore(settings)
    users = publish_synthetic(store, BenchConfig(items=400, users=20, factors=16, seed=5))
    try:
        with ApiProcess(settings) as proc:
            proc.wait_for("/readyz")
            yield proc.url, users
    finally:
        keys = list(store.client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
        if keys:
            store.client.delete(*keys)
        store.close()


def _without_age(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "vector_age_s"}  # seconds since the write: moves on


@pytest.mark.parametrize(("fast", "routed"), [
    ("k=10", "k=010"),
    ("k=7&exclude_seen=false", "k=7&exclude_seen=no"),
    ("k=5&category=cat-3", "k=5&category=cat-3&k=5"),
    ("k=8&exclude=item-1,item-2&exclude=item-3", "k=08&exclude=item-1&exclude=item-2,item-3"),
])
def test_both_lanes_give_the_same_answer(api: tuple[str, list[str]], fast: str, routed: str) -> None:
    url, users = api
    with httpx.Client(base_url=url, timeout=10) as http:
        for user in [*users[:3], "nobody-at-all"]:
            a = http.get(f"/v1/users/{user}/recommendations?{fast}")
            b = http.get(f"/v1/users/{user}/recommendations?{routed}")
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
            assert _without_age(a.json()) == _without_age(b.json())
            assert a.json()["items"]


def test_an_answer_is_written_in_one_piece(api: tuple[str, list[str]]) -> None:
    """Status line, headers and body leave in one write (online_api.http), so one read gets them all."""
    url, users = api
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for user in users[:10]:  # keep-alive: ten answers on one connection
            sock.sendall(f"GET /v1/users/{user}/recommendations?k=20 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = sock.recv(1 << 20)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            assert head.startswith(b"HTTP/1.1 200") and len(body) == length > 100
