"""A Redis store that publishes 200 k+ user vectors as pre-built RESP, for the refit.

:meth:`BulkStore.write_vectors` builds each ``HSET`` of 5,000 (user, vector) pairs as one RESP buffer
straight from the float32 block and streams the buffers on one connection before reading the replies,
so Redis parses chunk k while this process builds chunk k+1. ``streamrec bench publish`` times it against
the plain path (:meth:`streamrec.store.RedisStore.write_vectors`: redis-py pipelines, packed by hiredis) on
235 k × 64 vectors: 1.6–2.2 × faster in wall time on a quiet machine, with less than half the client CPU
and the same Redis CPU (figures in docs/batch.md), which is why it stays (issue 13: only while ≥ 1.5 ×).
It uses redis-py's public connection methods only (``send_packed_command``, ``read_response``), no
internals. Every other command of the publish goes through the client as usual (redis-py's own hiredis
packer: a hand-written serialiser for them was slower than it and is gone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from streamrec.redis_clients import sync_client
from streamrec.settings import Settings
from streamrec.store import F32, RedisStore


class BulkStore(RedisStore):
    """A :class:`RedisStore` (same URL and key prefix) with the streamed :meth:`write_vectors`."""

    def __init__(self, settings: Settings, url: str | None = None, prefix: str | None = None) -> None:
        super().__init__(settings, url=url, prefix=prefix)
        self._bulk: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._bulk is None:
            # a longer socket timeout than the store's: the replies are read after every chunk was sent
            self._bulk = sync_client(self.settings, self.url, socket_timeout=30, socket_connect_timeout=3)
        return self._bulk

    def write_vectors(self, key: str, ids: Sequence[str], block: np.ndarray, chunk: int = 5_000) -> None:
        """``HSET key`` each id to its row of ``block`` (raw little-endian float32), as pre-built RESP.

        Same keys and bytes as :meth:`RedisStore.write_vectors`; an error reply from any chunk is raised
        after every reply has been read (the connection stays usable).
        """
        if self.cluster:  # a cluster client has no one connection to stream on: the pipelined path
            super().write_vectors(key, ids, block, chunk)
            return
        rows = np.ascontiguousarray(block, dtype=F32)
        if rows.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {rows.shape[0]} vectors")
        if not ids:
            return
        width = rows.shape[1] * 4
        name = key.encode()
        head, vec_head = b"$4\r\nHSET\r\n$%d\r\n%b\r\n" % (len(name), name), b"$%d\r\n" % width
        pool = self.client.connection_pool
        conn = pool.get_connection()
        sent, failure = 0, None
        try:
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                raw = rows[start : start + chunk].tobytes()
                pieces = [b"*%d\r\n%b" % (2 + 2 * len(part), head)]
                pieces += [b"$%d\r\n%b\r\n%b%b\r\n" % (len(u), u, vec_head, raw[j * width : (j + 1) * width])
                           for j, u in enumerate(map(str.encode, part))]
                conn.send_packed_command([b"".join(pieces)], check_health=False)
                sent += 1
            for _ in range(sent):
                try:
                    conn.read_response()
                except redis.ResponseError as exc:  # keep reading: the replies must be drained
                    failure = failure or exc
        except BaseException:
            conn.disconnect()  # replies may be pending: never hand this connection back in that state
            raise
        finally:
            pool.release(conn)
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None

    @classmethod
    def like(cls, store: RedisStore, settings: Settings) -> BulkStore:
        """A bulk store on the same server and prefix as ``store``."""
        return cls(settings, url=store.url, prefix=store.keys.prefix)
