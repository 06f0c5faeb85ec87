"""online_api.redis_script on real Redis: the script's replies, NOSCRIPT, and a connection killed while idle."""

from __future__ import annotations

import asyncio
import uuid

import redis
import redis.asyncio as aredis

from online_api.redis_script import ScriptRunner
from streamrec.settings import Settings

# Each run uses a script Redis has never seen (a unique comment changes its SHA1), so the first call meets
# NOSCRIPT exactly as after a Redis restart.
SCRIPT = "-- {tag}\nreturn {{redis.call('GET', KEYS[1]) or false, ARGV[1]}}"


def test_replies_noscript_and_a_killed_connection(settings: Settings) -> None:
    key = f"{settings.redis_prefix}:script-test"
    admin = redis.Redis.from_url(settings.redis_url)

    async def scenario() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        runner = ScriptRunner(client, SCRIPT.format(tag=uuid.uuid4().hex))
        try:
            assert await runner([key], ["a"]) == [None, b"a"]  # NOSCRIPT, loaded, run again
            admin.set(key, b"\x00\xff raw")
            replies = await asyncio.gather(*(runner([key], [str(i)]) for i in range(20)))  # concurrent calls
            assert replies == [[b"\x00\xff raw", str(i).encode()] for i in range(20)]
            # Kill every idle connection the runner holds (as a Redis restart would): the next calls still work.
            for conn in runner._idle:
                host, port = conn._writer.get_extra_info("sockname")[:2]  # type: ignore[attr-defined]
                admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
            assert await runner([key], ["b"]) == [b"\x00\xff raw", b"b"]
            assert [await runner([key], [str(i)]) for i in range(3)] == [[b"\x00\xff raw", str(i).encode()]
                                                                         for i in range(3)]
        finally:
            await runner.aclose()
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        admin.delete(key)
        admin.close()
