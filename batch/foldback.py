"""No update lost across a refit: re-fold the users whose events the fit did not see.

A refit trains on the events up to the snapshot's end offsets. Events that arrive while it fits
reach the streaming worker, which folds them against the *old* version (it was current then), so
the new version's vector of such a user -- straight from the fit -- would not reflect them. After
``activate`` we therefore read the user ids of every event past the fit's end offsets and fold each
of those users in again from their full Redis history against the NEW item factors.

Racing the worker: it appends history and writes the user's vector in one MULTI/EXEC and WATCHes
``<p>:model:current``, so once the new version is current it writes there too. Each chunk here
WATCHes the users' history keys *before* reading the histories and writes the vectors in MULTI/EXEC;
if the worker appended anything in between, EXEC fails and the chunk is read and solved again. Both
writers compute from the full history against the same item factors, so whichever writes last
leaves a vector that reflects every event in the history. See docs/batch.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
import redis
import scipy.sparse as sp

from models.foldin import fold_in_users
from models.weighting import decay_factors, weighted_matrix
from streamrec.events import InvalidEvent, decode_event, now_ms
from streamrec.kafka_io import end_offsets, read_range
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import Interaction, read_histories, write_user_vectors

TP = tuple[str, int]
CHUNK = 500
MAX_ATTEMPTS = 20


def history_matrix(
    histories: Sequence[Sequence[Interaction]], item_index: dict[str, int], half_life_s: float | None, at_ms: int
) -> sp.csr_matrix:
    """Rows of summed weights (stored weight × decay to ``at_ms``) over the model's items.

    The weights are the ones the worker stored with each interaction; items the model does not know
    are left out (the version's ``new_items`` are folded in by the worker, not here).
    """
    rows: list[int] = []
    cols: list[int] = []
    weights: list[float] = []
    stamps: list[int] = []
    for r, history in enumerate(histories):
        for it in history:
            col = item_index.get(it.item)
            if col is not None:
                rows.append(r)
                cols.append(col)
                weights.append(it.weight)
                stamps.append(it.ts_ms)
    w = np.asarray(weights, dtype=np.float64) * decay_factors(np.asarray(stamps, dtype=np.int64), at_ms, half_life_s)
    return weighted_matrix(rows, cols, w, shape=(len(histories), len(item_index)))


def users_since(settings: Settings, start: dict[TP, int], timeout: float = 30.0) -> set[str]:
    """Users of every event after ``start`` up to the current end offsets (keys only; values if keyless)."""
    end = end_offsets(settings, settings.event_topics)
    users = {_user_of(r.key, r.value) for r in read_range(settings, start, end, timeout)}
    users.discard(None)
    return cast(set[str], users)


def _user_of(key: bytes | None, value: bytes | None) -> str | None:
    """The user an event belongs to: its key (the contract), else its decoded value; None if invalid."""
    if key:
        try:
            return key.decode()
        except UnicodeDecodeError:
            return None
    try:
        return decode_event(value).user_id
    except InvalidEvent:
        return None


def refold_users(
    settings: Settings,
    store: RedisStore,
    version: str,
    item_factors: npt.NDArray[np.float32],
    gram: npt.NDArray[np.float32],
    item_index: dict[str, int],
    users: Iterable[str],
    *,
    after_read: Callable[[list[str]], None] | None = None,
) -> dict[str, int]:
    """Fold ``users`` in from their Redis histories against ``version``'s factors and write them there.

    Users with no history on the model's items keep the vector the fit gave them. ``after_read`` is
    called between reading a chunk's histories and writing it (tests use it to race a writer).
    Returns counts: users written, users skipped, chunk retries after a concurrent history write.
    """
    half_life_s = settings.half_life_days * 86_400 if settings.half_life_days else None
    written = skipped = retries = 0
    # chunk by partition: a chunk's transaction then touches one slot (its users' histories and vectors)
    groups = sorted(store.keys.by_partition(sorted(set(users))).items())
    chunks = [(p, group[start : start + CHUNK]) for p, group in groups for start in range(0, len(group), CHUNK)]
    for p, chunk in chunks:
        for _attempt in range(MAX_ATTEMPTS):
            with store.client.pipeline(transaction=True) as tx:
                try:
                    # WATCH first: any history write after this point makes EXEC fail; writes before it
                    # are in what we read next (on another connection, after WATCH was acknowledged).
                    tx.watch(*(store.keys.history(u, p) for u in chunk))
                    histories = read_histories(store, chunk)
                    at = now_ms()
                    rows = history_matrix([histories[u] for u in chunk], item_index, half_life_s, at)
                    vecs = fold_in_users(item_factors, gram, rows, settings.als_regularization, settings.als_alpha)
                    if after_read is not None:
                        after_read(chunk)
                    keep = np.flatnonzero(np.diff(rows.indptr) > 0)
                    tx.multi()
                    write_user_vectors(tx, store, version, [chunk[k] for k in keep.tolist()], vecs[keep], at, p)
                    tx.execute()
                    written += len(keep)
                    skipped += len(chunk) - len(keep)
                    break
                except redis.WatchError:
                    retries += 1
        else:
            raise RuntimeError(f"histories kept changing: gave up re-folding {len(chunk)} users after "
                               f"{MAX_ATTEMPTS} attempts")
    return {"refold_users": written, "refold_skipped": skipped, "refold_retries": retries}
