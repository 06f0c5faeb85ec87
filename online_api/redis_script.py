"""One Lua script on the hot path, run on redis-py connections without the client's per-command bookkeeping.

``redis.asyncio.Redis`` spends more CPU around a command than on it: the pool's lock taken twice, a
readiness check of the socket, observability hooks and event dispatch, the retry wrapper — about twice
the cost of sending the command and parsing its reply. :class:`ScriptRunner` keeps a list of idle
redis-py connections of its own, made by the client's pool (so the URL's host, credentials, database, TLS
and timeouts apply, and the pool's health check every ``health_check_interval``), and uses each for one
``EVALSHA`` at a time, packed here (its shape never changes). The connection methods disconnect on any
error or cancellation; a disconnected connection reconnects on its next use, as in redis-py's own pool. A
connection that went stale while idle (Redis restarted) gets the command once more on a fresh socket.
Errors are redis-py's (``redis.RedisError`` and subclasses), which the API translates into 503 answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError


class ScriptRunner:
    """Runs ``script`` (``EVALSHA``, loading it on ``NOSCRIPT``) on at most ``max_connections`` connections."""

    def __init__(self, client: aredis.Redis, script: str, max_connections: int = 64) -> None:
        self._client = client
        self._script = client.register_script(script)  # the SHA1, computed locally
        self._idle: list[AbstractConnection] = []
        self._open = 0
        self._max = max_connections

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The script's reply for ``keys`` and ``args`` (redis-py's reply types, bytes undecoded)."""
        try:
            return await self._evalsha(_pack(self._script.sha, keys, args))
        except NoScriptError:  # Redis restarted or flushed its scripts: load it, once, and run it again
            self._script.sha = await self._client.script_load(self._script.script)
            return await self._evalsha(_pack(self._script.sha, keys, args))

    async def _evalsha(self, command: bytes) -> Any:
        if self._idle:
            conn, reused = self._idle.pop(), True
        elif self._open < self._max:
            conn, reused = self._client.connection_pool.make_connection(), False
            self._open += 1
        else:
            raise MaxConnectionsError("Too many connections")
        try:
            try:
                await conn.send_packed_command(command)
                return await conn.read_response()
            except RedisConnectionError:
                if not reused:
                    raise
                # Disconnected by now: the same command once more on a new socket.
                await conn.send_packed_command(command)
                return await conn.read_response()
        finally:
            self._idle.append(conn)

    async def aclose(self) -> None:
        """Disconnect every idle connection (at shutdown)."""
        while self._idle:
            await self._idle.pop().disconnect()


def _pack(sha: str, keys: Sequence[str], args: Sequence[str]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` in the Redis protocol (UTF-8 strings, as redis-py encodes them)."""
    values = [sha.encode(), str(len(keys)).encode(), *(v.encode() for v in (*keys, *args))]
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(values) + 1)]
    for value in values:
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)
