"""The worker's processing core: everything one batch of raw Kafka records does, without Faust.

:meth:`BatchProcessor.process` takes records (any topic mix, offsets ascending per partition) and:

1. decodes and validates each one (:mod:`.decode`); invalid ones become dead letters, and so do events not
   in the partition murmur2 gives their user (``wrong_partition``: the user's state is under that
   partition's keys, :class:`streamrec.store.Keys`);
2. WATCHes ``<p>:model:current`` (one Redis only) and one fence key per partition number in the batch (each
   bumped by every batch of its partition and by every model publish), and reads in
   one pipelined round trip the applied offsets, which event ids were seen, the users' event counts
   (validating the cached histories, see :mod:`.state`), categories and new-item state (histories not
   cached come in a second round trip, only for users seen before but not cached);
3. skips records at or below the applied offset of their partition (Kafka redelivery) and events
   whose ``event_id`` was already applied (client retries); sends the dead letters and waits for them;
4. folds every touched user in against the current model version (batched, :mod:`models.foldin`),
   and folds in new items that reached enough interactions (:mod:`.new_items`);
5. writes everything in ONE MULTI/EXEC: histories, event counts, vectors, trending, dedup markers,
   new-item state, the fences and the applied offset per partition. A WatchError (a model swap, or
   another worker applying events of the same partition during a rebalance) recomputes the batch.
   On a Redis Cluster the plan (steps 2-4) is still made once for the whole batch, and step 5 is one
   transaction per partition of the batch, each on its partition's slot
   (:class:`~.redis_io.Transactions`); the effects on the keys shared by all users go through each
   partition's outbox (:mod:`.shared`, the folded new-item vectors in the first partition's entry), applied
   to the shared keys by a background thread while the next batch runs (:mod:`.drainer`). A
   conflict retries only the partitions not committed yet, after applying the committed ones' outboxes in
   line, so the retry's plan reads new-item counts that include them (neither missed nor counted twice).

Failure policy, in this one place: a record's data problem makes a dead letter. Redis or Kafka
unavailable, timeouts and WATCH conflicts retry the batch with backoff, for as long as it takes. Any
other failure is retried once; then the batch is bisected until the record(s) that cannot be applied
are found: each becomes a dead letter with reason ``apply_failed`` (exception type and message in its
headers) and the rest is applied exactly once (:meth:`BatchProcessor._apply`).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Sequence
from typing import cast

import redis
import redis.exceptions as rexc
from confluent_kafka import KafkaException

from models.ids import IdMap
from stream_processors import metrics as m
from stream_processors.batch import BatchPlan
from stream_processors.columns import Batch
from stream_processors.decode import MAX_DETAIL, DeadLetter, ValidEvent, decode_records, placed
from stream_processors.drainer import Drainer
from stream_processors.redis_io import Transactions
from stream_processors.result import BatchResult
from stream_processors.shared import drain
from stream_processors.state import ModelState, UserCache
from streamrec.events import now_ms
from streamrec.kafka_io import KafkaUnavailable, Record
from streamrec.ranking_settings import covis_config
from streamrec.settings import Settings
from streamrec.store import RedisStore, StoreUnavailable
from streamrec.store.models import load_model

log = logging.getLogger("streamrec.worker")

# Redis Cluster's too: a slot moved or its master failed over (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a slot no
# node serves yet); the retry re-learns the topology first
INFRA_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError,
    StoreUnavailable, KafkaUnavailable, KafkaException, OSError,
    rexc.AskError, rexc.TryAgainError, rexc.ClusterError, rexc.RedisClusterException,
)
DeadLetterSink = Callable[[Sequence[DeadLetter]], None]


class BatchProcessor:
    """Applies batches of raw event records to Redis exactly once. Not thread-safe: one batch at a time."""

    def __init__(
        self,
        settings: Settings,
        store: RedisStore | None = None,
        *,
        dead_letters: DeadLetterSink | None = None,
        clock: Callable[[], int] = now_ms,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store or RedisStore(settings)
        self.clock = clock
        self.sleep = sleep
        self._dead_letters = dead_letters
        self.items = IdMap()
        self.users = UserCache(settings.worker_cache_users)
        self.model: ModelState | None = None
        self.categories: dict[str, str | None] = {}
        self.categories_at = time.monotonic()
        half_life = settings.half_life_days * 86_400 if settings.half_life_days else None
        # co-visitation kept per batch for the hybrid ranking (STREAMREC_WORKER_COVISITATION switches it off)
        self.covis = covis_config(settings) if settings.worker_covisitation else None
        self.weighting = settings.weighting(half_life)
        self.max_future_ms = int(settings.max_future_skew_s * 1000)
        # Items folded in after the refit join the solver at most this often (rebuilding it copies the
        # projected factors: tens of MB at 50,000 items).
        self.new_item_refresh_s = 5.0
        self._partition_of: dict[str, int] = {}  # user -> murmur2 partition (decode.placed's cache)
        self._drainer: Drainer | None = None  # Redis Cluster: applies the outboxes in the background
        # Retrying a batch while Redis is away: on a cluster a replica is promoted within seconds and the retry
        # (which re-learns the topology first) is what resumes the worker, so it looks again every second; one
        # Redis being away is usually longer (a restart), and 5 s between attempts is plenty.
        self._infra_backoff_cap = 1.0 if self.store.cluster else 5.0

    # ------------------------------------------------------------------------------------------ public
    def process(self, records: Sequence[Record], *, settle: bool = True) -> BatchResult:
        """Apply one batch; returns only once its effects are committed (retrying as long as it takes) and,
        with ``settle``, applied to the shared keys too (on a Redis Cluster they follow in the background,
        :mod:`.drainer`: the worker does not wait for them)."""
        attempts = self.attempts(records)
        try:
            while True:
                self.sleep(next(attempts))
        except StopIteration as done:
            result = cast(BatchResult, done.value)
        if settle:
            self.settle_shared()
        return result

    def attempts(self, records: Sequence[Record]) -> Generator[float, None, BatchResult]:
        """:meth:`process` as a generator: yields the seconds to wait before each retry, returns the result.

        The Faust agent drives it with ``asyncio.sleep`` so the event loop stays responsive (shutdown,
        rebalances) while Redis or Kafka is away; tests and benchmarks use :meth:`process`.
        """
        started = time.monotonic()
        if not records:
            return BatchResult()
        valid, dead = decode_records(records, self.clock(), self.max_future_ms)
        valid, misplaced = placed(valid, self.store.keys.partitions, self._partition_of)
        dead.extend(misplaced)
        decoded = time.monotonic() - started
        sent: set[tuple[str, int, int]] = set()  # dead letters already delivered by an earlier attempt
        result = yield from self._apply(list(records), valid, dead, sent)
        result.records = len(records)
        result.phases["decode"] = decoded
        result.batch_s = time.monotonic() - started
        m.observe_result(result)
        return result

    def _apply(self, records: list[Record], valid: list[ValidEvent], dead: list[DeadLetter],
               sent: set[tuple[str, int, int]]) -> Generator[float, None, BatchResult]:
        """Apply ``records`` (decoded as ``valid`` + ``dead``); isolate what cannot be applied.

        A batch that fails twice for a reason other than the infrastructure is split in halves, each
        applied on its own in order (so offsets still advance per partition in order), down to the one
        record that fails: that one becomes an ``apply_failed`` dead letter and everything else is applied
        exactly once. A poison event costs about 2·log2(batch) attempts, never the partition.
        """
        whole = Batch(valid, dead, self.weighting)
        outcome = yield from self._retry(whole, sent, bug_retries=1)
        if isinstance(outcome, BatchResult):
            return outcome
        total = BatchResult()
        if whole.committed:  # Redis Cluster: the partitions committed before one failed are done
            self.drain_outboxes(list(whole.committed))
            for result, applied in whole.committed.values():
                total.merge(result)
                m.observe_types(applied)
            records = [r for r in records if r.partition not in whole.committed]
            valid = [v for v in valid if v.record.partition not in whole.committed]
            dead = [d for d in dead if d.record.partition not in whole.committed]
        if len(records) == 1:
            alone = Batch(valid, dead, self.weighting)  # a dead letter alone failed: not an event's fault
            if valid:
                letter = DeadLetter(records[0], "apply_failed", f"{type(outcome).__name__}: {outcome}"[:MAX_DETAIL],
                                    exception=type(outcome).__name__)
                log.error("event at %s:%d:%d cannot be applied (%s: %s): sent to the dead-letter topic",
                          *_where(records[0]), type(outcome).__name__, outcome)
                alone = Batch([], [letter], self.weighting)
            last = yield from self._retry(alone, sent, bug_retries=None)
            assert isinstance(last, BatchResult)  # bug_retries=None retries until it succeeds
            total.merge(last)
            return total
        log.warning("batch of %d records failed twice (%s: %s): isolating the records that cannot be applied",
                    len(records), type(outcome).__name__, outcome)
        mid = len(records) // 2
        for half in (records[:mid], records[mid:]):
            where = {_where(r) for r in half}
            part = yield from self._apply(half, [v for v in valid if _where(v.record) in where],
                                          [d for d in dead if _where(d.record) in where], sent)
            total.merge(part)
        return total

    def _retry(self, batch: Batch, sent: set[tuple[str, int, int]],
               bug_retries: int | None) -> Generator[float, None, BatchResult | Exception]:
        """Attempt ``batch`` until it commits; returns the exception instead once more than ``bug_retries``
        attempts failed for a reason other than a conflict, a model swap or the infrastructure (None: never)."""
        backoff = 0.1
        attempts = bugs = 0
        while True:
            attempts += 1
            try:
                result = self._attempt(batch, sent)
                result.attempts = attempts
                m.observe_batch(batch)
                return result
            except redis.WatchError:
                m.RETRIES.labels("conflict").inc()
                yield 0.0
            except _ModelChanged:
                m.RETRIES.labels("model").inc()
                yield 0.0
            except INFRA_ERRORS as exc:
                m.RETRIES.labels("infrastructure").inc()
                log.warning("batch of %d events: %s: %s; retrying in %.1fs", batch.n + len(batch.dead),
                            type(exc).__name__, exc, backoff)
                yield backoff
                self._refresh_topology()
                backoff = min(backoff * 2, self._infra_backoff_cap)
            except Exception as exc:
                bugs += 1
                if bug_retries is not None and bugs > bug_retries:
                    return exc
                m.RETRIES.labels("bug").inc()
                log.exception("batch of %d events failed unexpectedly; retrying in %.1fs",
                              batch.n + len(batch.dead), backoff)
                yield backoff
                backoff = min(backoff * 2, 5.0)

    def refresh_model(self) -> str | None:
        """Load the current model version if it changed; returns the version folded against."""
        from streamrec.store.models import current_version

        self._load_model(current_version(self.store))
        return self.model.version if self.model else None

    # ------------------------------------------------------------------------------------------ internals
    def _attempt(self, batch: Batch, sent: set[tuple[str, int, int]]) -> BatchResult:
        # A Redis Cluster transaction is on one slot: one transaction per partition, each with its own offsets
        # and fence, so a partition committed before a later one failed is not applied again on the retry.
        todo = batch.without(batch.committed) if batch.committed else batch
        if batch.committed and todo.parts:  # a retry of the rest: the committed ones' shared effects go first
            self._drain_in_line(list(batch.committed))
        result = BatchResult()
        if todo.parts:
            result = self._attempt_on(todo, sent, Transactions(self.store, todo.parts))
        if not self.store.cluster:
            return result
        self.drain_outboxes(list(batch.committed))  # committed: now the shared keys, all partitions at once
        total = BatchResult(phases=result.phases)
        by_type: dict[tuple[str, str], int] = defaultdict(int)
        for part, applied in {id(r): (r, a) for r, a in batch.committed.values()}.values():
            total.merge(part)
            for key, n in applied.items():
                by_type[key] += n
        batch.applied_by_type = dict(by_type)
        return total

    def _refresh_topology(self) -> None:
        """On a Redis Cluster, re-learn the slots' masters before a retry (a failover moved them)."""
        try:
            self.store.refresh_topology()
        except (redis.RedisError, rexc.RedisClusterException, OSError) as exc:  # no node answers yet
            log.warning("redis cluster topology not refreshed (%s: %s)", type(exc).__name__, exc)

    def drain_outboxes(self, parts: Sequence[int] | None = None) -> None:
        """Have the outboxes of ``parts`` (default: every partition, the periodic sweep) applied to the shared
        keys (Redis Cluster, :func:`.shared.drain`), in the background (:class:`.drainer.Drainer`); a failure
        is logged, and the entries stay for the next drain (after the partition's next batch, or the sweep)."""
        if not self.store.cluster:
            return
        if self._drainer is None:
            covis = (self.covis.half_life_s, self.covis.top_n) if self.covis is not None else None
            self._drainer = Drainer(self.store, covis, self.settings.history_cap,
                                    (self.settings.redis_wait_replicas, self.settings.redis_wait_ms))
        self._drainer.submit(range(self.store.keys.partitions) if parts is None else parts)

    def _drain_in_line(self, parts: list[int]) -> None:
        """Apply the outboxes of ``parts`` now (Redis Cluster), so the next plan's reads of the new items'
        counts include them; an error is retried with the batch (an entry is applied once whatever happens)."""
        self.settle_shared()  # no drain in flight: what the plan then reads is settled
        covis = (self.covis.half_life_s, self.covis.top_n) if self.covis is not None else None
        drain(self.store, parts, covis, self.settings.history_cap,
              (self.settings.redis_wait_replicas, self.settings.redis_wait_ms))

    def settle_shared(self, timeout_s: float | None = None) -> bool:
        """Wait for the outbox drains in flight (Redis Cluster; at once on one Redis); False on timeout."""
        return self._drainer.flush(timeout_s) if self._drainer is not None else True

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the drains in flight (at most ``timeout_s``) and stop their thread."""
        if self._drainer is not None:
            self._drainer.close(timeout_s)

    def _attempt_on(self, batch: Batch, sent: set[tuple[str, int, int]], tx: Transactions) -> BatchResult:
        clock = time.perf_counter
        try:
            t0 = clock()
            plan = BatchPlan(self, batch, tx)
            plan.read()
            if plan.current != (self.model.version if self.model else None):
                self._load_model(plan.current)
                raise _ModelChanged
            plan.select()
            t1 = clock()
            letters = [d for d in plan.dead_letters if _where(d.record) not in sent]
            if letters and self._dead_letters is not None:
                self._dead_letters(letters)
                sent.update(_where(d.record) for d in letters)
            t2 = clock()
            plan.compute()
            t3 = clock()
            plan.write()
            t4 = clock()
            result = plan.commit()
            t5 = clock()
        finally:
            tx.close()
        result.phases.update(read=t1 - t0, dead_letters=t2 - t1, compute=t3 - t2, queue_writes=t4 - t3,
                             exec=t5 - t4)
        return result

    def _load_model(self, version: str | None) -> None:
        if version == (self.model.version if self.model else None):
            return
        if version is None:
            self.model = None
            return
        model = load_model(self.store, version)
        if model is None:  # `activate` checks a version is complete first: this is Redis losing data
            raise StoreUnavailable(f"model version {version} is current but its keys are missing")
        s = self.settings
        self.model = ModelState(model, self.items, s.als_regularization, s.als_alpha)
        m.MODEL_SWAPS.inc()
        m.MODEL_INFO.clear()
        m.MODEL_INFO.labels(version).set(1)
        log.info("folding against model version %s (%d items, %d factors)", version, len(model.item_ids),
                 model.factors)


def tune_gc() -> None:
    """Make the garbage collector cheap for a long-running worker (call once at start-up).

    The worker keeps many long-lived objects (cached histories, item ids, Faust's state), and each
    batch allocates tens of thousands of short-lived ones; with the default thresholds the collector
    ran full collections of the whole heap every few batches, ~25% of the core's time in profiles.
    Freezing what exists at start-up and collecting the young generation every 50,000 allocations
    instead of 700 removes nearly all of that; reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class _ModelChanged(Exception):
    """The current model version changed: compute the batch again."""


def _where(rec: Record) -> tuple[str, int, int]:
    return rec.topic, rec.partition, rec.offset

