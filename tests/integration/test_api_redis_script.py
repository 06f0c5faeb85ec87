"""The API's Lua script on real Redis: redis-py's ``register_script`` on the app's one client and pool.

Replies (bytes undecoded), NOSCRIPT (loaded and run again), connections killed while idle, and the
translation of a hung or failing Redis into the API's 503.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.errors import Unavailable
from online_api.service import USER_STATE_LUA
from streamrec.redis_clients import sync_client
from streamrec.settings import Settings
from streamrec.store import RedisStore

# Each run uses a script Redis has never seen (a unique comment changes its SHA1), so the first call meets
# NOSCRIPT exactly as after a Redis restart.
SCRIPT = "-- {tag}\nreturn {{redis.call('GET', KEYS[1]) or false, ARGV[1]}}"


def test_the_service_script_runs_on_the_apps_one_client(settings: Settings) -> None:
    svc = create_app(settings, background=False).state.service
    script = svc._user_state
    assert script.registered_client is svc.client and script.script == USER_STATE_LUA


@pytest.mark.single_redis  # the pool of one server's client (a cluster client has one per node)
def test_replies_noscript_and_killed_connections(settings: Settings) -> None:
    key = f"{settings.redis_prefix}:script-test"
    admin = redis.Redis.from_url(settings.redis_url)

    async def scenario() -> None:
        client = create_app(settings, background=False).state.service.client  # the app's client and pool
        run = client.register_script(SCRIPT.format(tag=uuid.uuid4().hex))
        try:
            assert await run([key], ["a"]) == [None, b"a"]  # NOSCRIPT, loaded, run again
            admin.set(key, b"\x00\xff raw")
            replies = await asyncio.gather(*(run([key], [str(i)]) for i in range(20)))  # concurrent calls
            assert replies == [[b"\x00\xff raw", str(i).encode()] for i in range(20)]
            # Kill every idle connection of the pool (as a Redis restart would): the next calls still work.
            idle = list(client.connection_pool._available_connections)
            assert idle
            for conn in idle:
                host, port = conn._writer.get_extra_info("sockname")[:2]
                admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            assert await run([key], ["b"]) == [b"\x00\xff raw", b"b"]
            assert [await run([key], [str(i)]) for i in range(3)] == [[b"\x00\xff raw", str(i).encode()]
                                                                      for i in range(3)]
        finally:
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        admin.delete(key)
        admin.close()


def test_a_redis_error_in_the_script_is_a_503(settings: Settings) -> None:
    admin = sync_client(settings)
    history = RedisStore(settings).keys.history("u-wrongtype")
    admin.set(history, "not a list")  # LRANGE in the script fails: WRONGTYPE
    try:
        with TestClient(create_app(settings, background=False), raise_server_exceptions=False) as c:
            for query in ("k=5", "k=05"):  # the fast lane and the route
                resp = c.get(f"/v1/users/u-wrongtype/recommendations?{query}")
                assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable", resp.text
                assert resp.headers["retry-after"]
    finally:
        admin.delete(history)
        admin.close()


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_hung_redis_is_unavailable_within_the_deadline(settings: Settings, hung_redis: str) -> None:
    svc = create_app(settings.model_copy(update={"redis_url": hung_redis}), background=False).state.service

    async def scenario() -> float:
        started = time.monotonic()
        try:
            with pytest.raises(Unavailable, match="did not answer in time"):
                await svc.recommend("u1", 5)
            return time.monotonic() - started
        finally:
            await svc.client.aclose()

    assert asyncio.run(scenario()) < 3  # service.REDIS_TIMEOUT_S (1 s), not a hung request
