"""The worker's Redis round trips: WATCH, one pipelined read, then one MULTI/EXEC.

redis-py runs every command immediately once a pipeline WATCHes, which would cost a round trip per
read. :class:`WatchedBatch` therefore sends the reads itself, pipelined on the watching connection,
then queues the writes on the same pipeline after MULTI. If any watched key changes before EXEC,
:class:`redis.WatchError` is raised and the caller recomputes the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.exceptions as rexc
from redis.client import Pipeline

from stream_processors.metrics import UNREPLICATED
from streamrec.store import RedisStore

log = logging.getLogger("streamrec.worker")

Command = tuple[Any, ...]

# KEYS = dedup bucket sets; ARGV[1] = 16-byte event ids, concatenated. Returns the 1-based positions
# of the ids already in any bucket. Missing buckets are skipped up front.
_DEDUP_CHECK_LUA = """
local blob, ids, found, out = ARGV[1], {}, {}, {}
for i = 0, #blob / 16 - 1 do ids[#ids + 1] = string.sub(blob, i * 16 + 1, i * 16 + 16) end
for k = 1, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    for start = 1, #ids, 4000 do
      local stop = math.min(start + 3999, #ids)
      local hits = redis.call('SMISMEMBER', KEYS[k], unpack(ids, start, stop))
      for j = start, stop do
        if hits[j - start + 1] == 1 then found[j] = true end
      end
    end
  end
end
for j = 1, #ids do
  if found[j] then out[#out + 1] = j end
end
return out
"""

# KEYS[1] = the current bucket set; ARGV = [expire-at epoch s, 16-byte ids concatenated].
_DEDUP_ADD_LUA = """
local blob, ids = ARGV[2], {}
for i = 0, #blob / 16 - 1 do ids[#ids + 1] = string.sub(blob, i * 16 + 1, i * 16 + 16) end
for start = 1, #ids, 4000 do
  redis.call('SADD', KEYS[1], unpack(ids, start, math.min(start + 3999, #ids)))
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
return #ids
"""


def dedup_buckets(now_s: int, window_s: int) -> tuple[int, list[int], int]:
    """(bucket to add to, buckets to check, expire-at of the current bucket) for the dedup sets.

    Buckets are ``window_s / 2`` wide; an id added at time t sits in bucket b(t) and is found by any
    check until at least t + window_s, since the three newest buckets span more than the window.
    """
    width = max(1, (window_s + 1) // 2)
    current = now_s // width
    return current, [current, current - 1, current - 2], (current + 1) * width + window_s + 60


def dedup_check_command(keys: Sequence[str], ids_blob: bytes) -> Command:
    return ("EVAL", _DEDUP_CHECK_LUA, len(keys), *keys, ids_blob)


def queue_dedup_add(pipe: Pipeline, key: str, ids_blob: bytes, expire_at: int) -> None:
    pipe.execute_command("EVAL", _DEDUP_ADD_LUA, 1, key, expire_at, ids_blob)


def wait_for_replicas(conn: Any, replicas: int, wait_ms: int) -> int:
    """WAIT on ``conn`` (the connection of the transaction just executed) until ``replicas`` replicas have its
    writes, at most ``wait_ms``; returns how many did, and counts a shortfall in the metrics. The pipeline
    has handed the connection back to its pool, but the worker is single-threaded: nobody took it since."""
    conn.send_command("WAIT", replicas, wait_ms)
    acked = int(conn.read_response())
    if acked < replicas:
        UNREPLICATED.inc()
        log.warning("a transaction reached %d of %d replicas within %d ms: a failover now could lose it",
                    acked, replicas, wait_ms)
    return acked


class WatchedBatch:
    """One optimistic transaction: ``watch`` keys, ``read`` (pipelined), ``writes()``, ``execute()``."""

    def __init__(self, store: RedisStore, client: redis.Redis | None = None) -> None:
        """On ``client`` (default: the store's; on a Redis Cluster, the node of the partition's slot)."""
        self.store = store
        self.node = client or store.client
        self.pipe: Pipeline = self.node.pipeline(transaction=True)

    def watch(self, keys: Sequence[str]) -> None:
        self.pipe.watch(*keys)

    def send_watch(self, keys: Sequence[str]) -> None:
        """The first half of :meth:`watch`: send WATCH without waiting (several partitions' WATCHes then take
        one round trip); :meth:`watched` reads the reply."""
        pipe = self.pipe
        if pipe.connection is None:
            pipe.connection = pipe.connection_pool.get_connection()
        try:
            pipe.connection.send_command("WATCH", *keys)
        except BaseException:
            pipe.reset()
            raise

    def watched(self) -> None:
        """The second half of :meth:`send_watch`: the WATCH's reply; the pipeline now watches (as redis-py's)."""
        pipe = self.pipe
        assert pipe.connection is not None
        try:
            pipe.connection.read_response()
        except BaseException:
            pipe.connection.disconnect()
            pipe.reset()
            raise
        pipe.watching = True

    def read(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip on the watching connection; raw replies, in order."""
        if not commands:
            return []
        conn = self.pipe.connection
        if conn is None:
            raise redis.ConnectionError("watch() first")
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            first_error: redis.ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:  # read the rest anyway, so the connection stays in sync
                    first_error = first_error or exc
                    replies.append(None)
        except BaseException:
            conn.disconnect()
            raise
        if first_error is not None:
            raise first_error
        return replies

    def writes(self) -> Pipeline:
        """Start MULTI: queue the batch's writes on the returned pipeline, then :meth:`execute`."""
        self.pipe.multi()
        return self.pipe

    def execute(self) -> list[Any]:
        """EXEC (raises WatchError when a watched key changed); the replies."""
        return list(self.pipe.execute())

    def send_exec(self) -> Any:
        """The first half of :meth:`execute` (no WAIT): send MULTI, the queued writes and EXEC without waiting,
        so the transactions of several nodes run at once; :meth:`exec_reply` reads the outcome. Returns the
        connection (for a WAIT after the reply)."""
        pipe = self.pipe
        conn = pipe.connection
        if conn is None:
            raise redis.ConnectionError("watch() first")
        if pipe.scripts:  # scripts registered on the pipeline are loaded before the MULTI, as redis-py does
            pipe.load_scripts()
        commands = [("MULTI",), *(args for args, _ in pipe.command_stack), ("EXEC",)]
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            pipe.reset()
            raise
        return conn

    def exec_reply(self) -> list[Any]:
        """The second half of :meth:`send_exec`: raises WatchError when a watched key changed, the first
        error of a queued command otherwise; the replies when the transaction committed."""
        pipe = self.pipe
        conn = pipe.connection
        assert conn is not None
        queued = len(pipe.command_stack)
        errors: list[redis.ResponseError] = []
        try:
            for _ in range(queued + 1):  # MULTI's OK, then one QUEUED (or a syntax error) per write
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    errors.append(exc)
            try:
                reply = conn.read_response()
            except rexc.ExecAbortError:
                raise errors[0] if errors else rexc.ExecAbortError("EXECABORT") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            raise
        finally:
            pipe.watching = False  # EXEC (or the lost connection) ended the WATCH: no UNWATCH on reset
            pipe.reset()
        if reply is None:
            raise redis.WatchError("Watched variable changed.")
        for r in reply:
            if isinstance(r, redis.ResponseError):
                raise r
        return list(reply)

    def close(self) -> None:
        self.pipe.reset()


class Transactions:
    """A batch's optimistic transactions, by partition: on one Redis a single :class:`WatchedBatch` for all the
    batch's partitions; on a Redis Cluster one per partition, on the master of its slot, executed in order.

    The reads go in one round trip: on the watching connection on one Redis; on a cluster through the
    cluster client's pipeline (one round trip per node), after every partition's fence is WATCHed -- a
    write made after the WATCH changes the fence, so the EXEC on the watching connection still fails.
    """

    def __init__(self, store: RedisStore, parts: Sequence[int]) -> None:
        self.store, self.parts, self.cluster = store, list(parts), store.cluster
        if self.cluster:
            self.txs = {p: WatchedBatch(store, store.node_client(store.keys.tag(p))) for p in self.parts}
        else:
            one = WatchedBatch(store)
            self.txs = dict.fromkeys(self.parts, one)
        self._multi: set[int] = set()

    def watch(self, fences: dict[int, str], pointer: str) -> None:
        """WATCH each partition's fence key; on one Redis also the model ``pointer`` (on a cluster it is in
        another slot: a swap during the batch is caught by the refit's re-fold, batch/foldback.py)."""
        if not self.cluster:
            self.txs[self.parts[0]].watch([pointer, *fences.values()])
            return
        for p, fence in fences.items():  # every partition's WATCH in flight at once: one round trip, not one each
            self.txs[p].send_watch([fence])
        for p in fences:
            self.txs[p].watched()

    def read(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one round trip (per node on a cluster); raw replies, in order."""
        if not self.cluster:
            return self.txs[self.parts[0]].read(commands)
        if not commands:
            return []
        pipe = self.store.client.pipeline(transaction=False)
        for cmd in commands:
            pipe.execute_command(*cmd)
        return list(pipe.execute())

    def writes(self, p: int) -> Pipeline:
        """The pipeline (after MULTI) of partition ``p``'s writes (on one Redis, the same for every ``p``)."""
        tx = self.txs[p]
        key = p if self.cluster else -1
        if key not in self._multi:
            self._multi.add(key)
            return tx.writes()
        return tx.pipe

    def execute(self, wait_replicas: int, wait_ms: int, committed: Callable[[Sequence[int]], None]) -> None:
        """EXEC (on a cluster each partition's, the first one first, then WAIT for ``wait_replicas`` at most
        ``wait_ms``: replication is asynchronous, and without the WAIT a master failing right after EXEC could
        lose a transaction whose offsets Kafka then commits), calling ``committed`` with the partitions of each
        transaction as soon as it succeeded: a WatchError on one partition leaves the others applied."""
        if not self.cluster:
            self.txs[self.parts[0]].execute()
            committed(self.parts)
            return
        # The first partition's transaction alone (it carries the batch's folded new items, so it must commit
        # first), then all the others in flight at once: each node runs its own while the others run theirs.
        # Then one WAIT per node: WAIT covers every write its master made before the last one on that connection.
        todo = [p for p in self.parts if p in self._multi]  # the others had nothing left to write
        last: dict[int, Any] = {}  # node -> the connection of its last transaction
        failed: BaseException | None = None
        for group in (todo[:1], todo[1:]):
            sent = [(p, self.txs[p].send_exec()) for p in group]
            for p, conn in sent:  # read every reply, so no connection is left with one unread
                try:
                    self.txs[p].exec_reply()
                except BaseException as exc:
                    failed = failed or exc
                    continue
                committed([p])
                last[id(self.txs[p].node)] = conn
            if failed is not None:
                break
        if wait_replicas:  # nobody took those connections from their pools since: this thread is the only user
            for conn in last.values():
                wait_for_replicas(conn, wait_replicas, wait_ms)
        if failed is not None:  # the committed ones stay committed (and replicated): the caller retries the rest
            raise failed

    def close(self) -> None:
        for tx in {id(tx): tx for tx in self.txs.values()}.values():
            tx.close()


# KEYS[1] = the offsets hash; ARGV = field, offset, field, offset ... Only ever moves an offset forward,
# so a worker finishing a stale batch after a rebalance cannot move it back.
_OFFSETS_MAX_LUA = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def queue_offsets_max(pipe: Pipeline, key: str, offsets: dict[str, int]) -> None:
    """Queue: set each ``topic:partition`` field to its offset unless the stored one is higher."""
    if offsets:
        args = [x for field, off in offsets.items() for x in (field, off)]
        pipe.execute_command("EVAL", _OFFSETS_MAX_LUA, 1, key, *args)
