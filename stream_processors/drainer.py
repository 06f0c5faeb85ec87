"""Applying the outboxes in the background (Redis Cluster): the shared keys catch up while the next batch runs.

On a Redis Cluster a batch's effects on the shared keys (trending, new items, co-visitation) are committed
to its partitions' outboxes with the histories and offsets; :func:`.shared.drain` then applies them, one
transaction per kind of shared key, each WAITing for a replica. Doing that between two batches left the
worker waiting on Redis for about a fifth of the batch's time. :class:`Drainer` does it in one thread of its
own instead, with its own clients (so no connection is shared between threads), while the worker computes
the next batch. Nothing is lost or doubled by the move: an entry is applied once per kind whoever drains it
and whenever (the ``applied`` numbers), and stays in its outbox until applied, so a worker stopped or killed
with a drain in flight leaves it to the next drain (its own, or the next owner's sweep).

What the worker reads back of the shared keys is only the new items' state (pending interaction counts):
a batch that touches items the model does not hold waits for the drains in flight first
(:meth:`Drainer.flush`), so its counts include every earlier batch of this worker, as they did when the
drain ran in line.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable

import redis
import redis.exceptions as rexc

from stream_processors.shared import drain
from streamrec.store import RedisStore, StoreUnavailable

log = logging.getLogger("streamrec.worker")


class Drainer:
    """One background thread applying the outboxes of the partitions submitted to it (Redis Cluster).

    Submissions made while a drain runs are merged into the next one, so a worker faster than its drains
    applies several batches' entries per transaction instead of falling behind.
    """

    def __init__(self, store: RedisStore, covis: tuple[float, int] | None, history_cap: int,
                 wait: tuple[int, int]) -> None:
        # its own clients: a redis-py connection (and the WAIT after a transaction on it) is not shared
        self.store = RedisStore(store.settings, store.url, store.keys.prefix)
        self.covis, self.history_cap, self.wait = covis, history_cap, wait
        self._cv = threading.Condition()
        self._todo: set[int] = set()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, parts: Iterable[int]) -> None:
        """Drain the outboxes of ``parts`` soon (returns at once)."""
        with self._cv:
            self._todo.update(parts)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamrec-outbox-drain", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted drain ran (successfully or not); False if ``timeout_s`` passed first."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._todo and not self._busy, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the submitted drains (at most ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._todo) or self._closed)
                if self._closed and not self._todo:
                    return
                parts, self._todo, self._busy = sorted(self._todo), set(), True
            try:
                self._drain(parts)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _drain(self, parts: list[int]) -> None:
        try:
            drain(self.store, parts, self.covis, self.history_cap, self.wait)
        except (redis.RedisError, rexc.RedisClusterException, OSError, StoreUnavailable) as exc:
            log.warning("shared effects of partitions %s not applied yet (%s: %s); the next drain applies them",
                        parts, type(exc).__name__, exc)
            with contextlib.suppress(redis.RedisError, rexc.RedisClusterException, OSError):
                self.store.refresh_topology()  # a failover moved a slot: learn where before the next drain
        except Exception:  # a bug: keep the thread (the entries stay in their outboxes), say so loudly
            log.exception("applying the outboxes of partitions %s failed; the entries stay for the next drain",
                          parts)
