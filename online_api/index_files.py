"""One copy per host of a model version's item indexes and refit factors: written by the first API process,
mapped by the others.

Each uvicorn worker (``--workers N``) is a process of its own and would otherwise build and hold both faiss
indexes of the served version (about 530 bytes per item; 530 MB at a million items, per process). With a
directory on a memory file system (``STREAMREC_API_INDEX_DIR``, default ``/dev/shm/streamrec``), the first
process to want a version's indexes builds them and writes them there; every process, the builder included,
then maps the files read-only (``faiss.IO_FLAG_MMAP_IFC``): the pages are the page cache's, one copy for all.
The refit's factors (256 bytes per item at 64 factors) are written beside them and mapped copy-on-write
(:class:`SharedFactors`), so the items each process folds in after the refit stay its own.

Coordination is ``flock`` on one lock file per version, no daemon and no Redis key:

* a process builds or maps under the exclusive lock, so a version is built once per host (the others wait
  for it, on the index build thread, off the request path), then keeps a shared lock while it serves it;
* files whose lock nobody holds are removed (:meth:`SharedIndexes.sweep`, after every build or map and at
  shutdown), so the directory holds the versions some process serves, and what a killed process left (of
  any prefix) goes at the next sweep. A file removed while mapped stays valid for whoever mapped it (POSIX unlink).

Names carry the Redis prefix, the version and a digest of the index descriptions and of the factors, so two
deployments, or two settings, never share a file by accident. Anything that fails here (a full ``/dev/shm``,
as in a container's default 64 MB, or an unreadable file) is logged and the process keeps an index of its
own: sharing saves memory, it is never what serving depends on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

import faiss
import numpy as np
import numpy.typing as npt

from models.ann import AnnParams, ItemIndex, ItemIndexes

log = logging.getLogger("streamrec.api")

F32 = npt.NDArray[np.float32]
Build = Callable[[F32, AnnParams, AnnParams], ItemIndexes]
PARTS = ("dot", "cosine")
FACTORS = "factors.f32"
FACTORS_ROOM = 100_000  # rows folded in after the refit a shared factors file has room for, at least
LOCK_WAIT_S = 300.0  # longer than a million items' build; a lock held longer than that is not waited for


def _safe(text: str) -> str:
    """``text`` as a part of a file name (prefixes and versions may hold any character)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _lock(lock: IO[bytes], mode: int, wait_s: float = LOCK_WAIT_S) -> bool:
    """Take ``mode`` on ``lock`` within ``wait_s`` (polled: flock has no timeout); False if it stayed taken."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log.warning("%s held for over %.0fs: not shared", lock.name, wait_s)
                return False
            time.sleep(0.05)


class SharedFactors:
    """A version's refit item factors in a file of the shared directory, mapped copy-on-write per model.

    The file holds the ``n`` refit rows, followed by room for ``capacity`` more that is a hole (no memory
    on tmpfs). :meth:`matrix` maps the refit rows plus as many rows as the model has folded-in items with
    ``MAP_PRIVATE``: the refit rows stay the page cache's pages, one copy for the host, and only the pages the
    folded-in items are written to become the process's own.
    """

    def __init__(self, path: Path, n: int, f: int, capacity: int) -> None:
        self.path, self.n, self.f, self.capacity = path, n, f, capacity

    @classmethod
    def write(cls, path: Path, factors: F32) -> SharedFactors:
        """Write ``factors`` (little-endian float32 rows) to ``path`` with room for as many rows again."""
        n, f = factors.shape
        capacity = max(FACTORS_ROOM, n)
        with path.open("wb") as out:
            np.ascontiguousarray(factors, dtype="<f4").tofile(out)  # no bytes copy of the whole matrix
            out.truncate(4 * f * (n + capacity))  # the room is a hole: no bytes until written
        return cls(path, n, f, capacity)

    def matrix(self, extra: Sequence[F32]) -> F32 | None:
        """The refit rows followed by ``extra`` (read-only), or None if the room or the file is missing."""
        if len(extra) > self.capacity:
            return None
        rows = self.n + len(extra)
        try:
            with self.path.open("rb") as fh:
                mapped = mmap.mmap(fh.fileno(), 4 * self.f * rows, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):  # removed, or shorter than it should be
            return None
        mat = np.frombuffer(mapped, dtype="<f4").reshape(rows, self.f)
        if extra:
            mat[self.n:] = np.stack(extra)
        mat.flags.writeable = False
        return mat


class SharedIndexes:
    """The item index files of one Redis prefix in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], prefix: str) -> None:
        self.dir = Path(directory)
        self.stem = _safe(prefix)
        self._held: dict[str, IO[bytes]] = {}  # name -> open lock file, shared-locked while served
        self._factors: dict[str, SharedFactors] = {}  # name -> its factors file, for the held names

    def name(self, version: str, factors: F32, params: tuple[AnnParams, AnnParams]) -> str:
        """The files' common name: prefix, version, and a digest of what the indexes are built from."""
        digest = hashlib.sha1(json.dumps([asdict(p) for p in params], sort_keys=True).encode())
        digest.update(repr(factors.shape).encode())
        step = max(1, factors.shape[0] // 4096)  # a strided sample of the rows: cheap, and any refit differs
        digest.update(np.ascontiguousarray(factors[::step]).tobytes())
        return f"{self.stem}.{_safe(version)}.{digest.hexdigest()[:16]}"

    def get_or_build(self, version: str, factors: F32, params: tuple[AnnParams, AnnParams],
                     build: Build) -> ItemIndexes:
        """The version's indexes mapped from the directory, built and written first if no process has."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = self.name(version, factors, params)
        started = time.perf_counter()
        # Shared first: mapping what another process wrote needs no turn of its own (the processes serving
        # the version hold shared locks too). A builder holds the lock exclusively until its files are
        # written, so this waits for a build in progress.
        lock = self._locked(name, fcntl.LOCK_SH)
        try:
            mapped = self._map(name, params) if lock is not None else None
            if mapped is None:
                if lock is not None:
                    lock.close()
                lock = self._locked(name, fcntl.LOCK_EX)  # one builder per version and host
                mapped = self._map(name, params) if lock is not None else None  # built while this one waited
                if mapped is None:
                    built = build(factors, *params)
                    mapped = self._write_and_map(name, built, factors, params) if lock is not None else None
                    if mapped is None:  # not shared: hold no lock, so another process may try in its turn
                        if lock is not None:
                            lock.close()
                        return built
                assert lock is not None
                fcntl.flock(lock, fcntl.LOCK_SH)  # in use: no sweep removes the files while this one serves
            else:
                log.info("item indexes of model %s mapped from %s in %.2fs", version, self.dir,
                         time.perf_counter() - started)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        for other in [n for n in self._held if n != name]:  # the version being swapped out
            self._held.pop(other).close()
            self._factors.pop(other, None)
        assert lock is not None  # every path without a lock returned above
        self._held[name] = lock
        if (shared_factors := self._shared_factors(name)) is not None:
            self._factors[name] = shared_factors
        self.sweep()
        return mapped

    def _locked(self, name: str, mode: int) -> IO[bytes] | None:
        """The version's lock file, open and locked in ``mode``; None if it stayed taken too long.

        A sweep may remove the lock file between this process opening it and locking it: a lock on the
        removed file would guard nothing, so the path is checked to still be the file locked, else reopened.
        """
        path = self.dir / f"{name}.lock"
        while True:
            lock = path.open("ab")
            if not _lock(lock, mode):
                lock.close()
                return None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                    return lock
            lock.close()

    def factors_for(self, version: str) -> SharedFactors | None:
        """The shared factors file of the held ``version`` (None: not shared, or not held)."""
        stem = f"{self.stem}.{_safe(version)}."
        return next((f for name, f in self._factors.items() if name.startswith(stem)), None)

    def _write_and_map(self, name: str, built: ItemIndexes, factors: F32, params: tuple[AnnParams, AnnParams]
                       ) -> ItemIndexes | None:
        """Write both indexes and the factors (each to a temporary name, then renamed: a reader never sees
        half a file) and map them back, so the builder's own copy is the shared one too; None if the
        directory refused."""
        tmp = f"tmp{os.getpid()}"
        try:
            for part in PARTS:
                faiss.write_index(getattr(built, part).faiss_index, str(self.dir / f"{name}.{part}.faiss.{tmp}"))
                (self.dir / f"{name}.{part}.faiss.{tmp}").rename(self.dir / f"{name}.{part}.faiss")
            rows = SharedFactors.write(self.dir / f"{name}.{FACTORS}.{tmp}", factors)
            (self.dir / f"{name}.{FACTORS}.{tmp}").rename(self.dir / f"{name}.{FACTORS}")
            meta = {"n_indexed": built.n_indexed, "build_s": [built.dot.build_s, built.cosine.build_s],
                    "factors": {"f": rows.f, "capacity": rows.capacity}}
            (self.dir / f"{name}.json").write_text(json.dumps(meta))
        except (OSError, RuntimeError) as exc:  # RuntimeError: faiss's own write failure (a full tmpfs)
            log.warning("item indexes not shared (%s): this process keeps its own copy", exc)
            self._remove(name)
            return None
        return self._map(name, params) or built

    def _map(self, name: str, params: tuple[AnnParams, AnnParams]) -> ItemIndexes | None:
        """Both indexes mapped read-only, or None if the files are missing or unreadable."""
        meta_path = self.dir / f"{name}.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            parts = []
            for part, p, build_s in zip(PARTS, params, meta["build_s"], strict=True):
                index = faiss.read_index(str(self.dir / f"{name}.{part}.faiss"), faiss.IO_FLAG_MMAP_IFC)
                faiss.ParameterSpace().set_index_parameters(index, p.search)  # type: ignore[arg-type]
                parts.append(ItemIndex(index, int(meta["n_indexed"]), p, float(build_s)))
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            log.warning("item index files %s unreadable (%s): building them again", name, exc)
            return None
        return ItemIndexes(*parts)

    def _shared_factors(self, name: str) -> SharedFactors | None:
        """The factors file beside the name's indexes, if there is one."""
        path = self.dir / f"{name}.{FACTORS}"
        try:
            meta = json.loads((self.dir / f"{name}.json").read_text())
            shape = meta["factors"]
            return SharedFactors(path, int(meta["n_indexed"]), int(shape["f"]), int(shape["capacity"])) \
                if path.exists() else None
        except (OSError, ValueError, KeyError):
            return None

    def sweep(self) -> list[str]:
        """Remove the files of the versions no process serves (nobody holds their lock), whatever their
        prefix: what a killed process of another deployment left goes too; returns the names removed."""
        removed = []
        for lock_path in self.dir.glob("*.lock"):
            name = lock_path.name[: -len(".lock")]
            if name in self._held:
                continue
            try:
                with lock_path.open("rb") as lock:  # never creates: a lock removed meanwhile stays gone
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._remove(name)
                    removed.append(name)
            except (BlockingIOError, FileNotFoundError):
                continue  # in use (or another sweep got there first)
        return removed

    def _remove(self, name: str) -> None:
        for path in (*(self.dir / f"{name}.{p}.faiss" for p in PARTS), self.dir / f"{name}.{FACTORS}",
                     self.dir / f"{name}.json",
                     self.dir / f"{name}.lock", *self.dir.glob(f"{name}.*.tmp*")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self) -> None:
        """Stop serving every held version; the last process out removes the files."""
        for lock in self._held.values():
            lock.close()
        self._held.clear()
        self._factors.clear()
        with contextlib.suppress(OSError):
            self.sweep()
