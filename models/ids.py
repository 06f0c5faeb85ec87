"""Bidirectional map between external string ids and dense integer indices (factor rows)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

_FORMAT_VERSION = 1


class IdMap:
    """Dense, append-only ``str <-> int`` map. Index ``i`` is the i-th id ever added."""

    __slots__ = ("_ids", "_index")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> IdMap:
        """Build a map in first-seen order; repeated ids keep their first index."""
        out = cls()
        for external_id in ids:
            out.add(external_id)
        return out

    def add(self, external_id: str) -> int:
        """Return the index of ``external_id``, appending it if new."""
        found = self._index.get(external_id)
        if found is not None:
            return found
        if not isinstance(external_id, str):
            raise TypeError(f"ids must be str, got {type(external_id).__name__}")
        self._index[external_id] = len(self._ids)
        self._ids.append(external_id)
        return len(self._ids) - 1

    def index(self, external_id: str) -> int | None:
        """Index of ``external_id``, or ``None`` when unknown."""
        return self._index.get(external_id)

    def indices(self, external_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Indices as an int64 array, ``-1`` for unknown ids (see :meth:`known_mask`).

        ``-1`` must never reach numpy indexing unfiltered: it would silently pick the last row.
        """
        get = self._index.get
        return np.fromiter((get(i, -1) for i in external_ids), dtype=np.int64)

    def known_mask(self, external_ids: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Boolean mask: which of ``external_ids`` are in the map."""
        return self.indices(external_ids) >= 0

    def id_of(self, idx: int) -> str:
        """External id at ``idx`` (raises ``IndexError`` when out of range or negative)."""
        if idx < 0:
            raise IndexError(idx)
        return self._ids[idx]

    def ids_of(self, idx: Iterable[int] | npt.NDArray[np.integer]) -> list[str]:
        """External ids for an iterable/array of indices (raises ``IndexError`` for an out-of-range or
        negative one). One list lookup per index: the worker maps every co-visitation neighbour of a batch."""
        seq = idx.tolist() if isinstance(idx, np.ndarray) else list(idx)
        if seq and min(seq) < 0:
            raise IndexError(min(seq))
        ids = self._ids
        return [ids[i] for i in seq]

    @property
    def ids(self) -> Sequence[str]:
        """All ids in index order (a copy; mutate the map with :meth:`add`)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids == other._ids

    def __hash__(self) -> int:
        raise TypeError("IdMap is mutable and unhashable")

    def __repr__(self) -> str:
        return f"IdMap({len(self)} ids)"

    def to_json(self) -> str:
        """Plain JSON (``{"version": 1, "ids": [...]}``); ASCII-escaped so any str round-trips."""
        return json.dumps({"version": _FORMAT_VERSION, "ids": self._ids}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> IdMap:
        """Inverse of :meth:`to_json`; rejects malformed payloads and duplicate ids."""
        payload = json.loads(text)
        if not isinstance(payload, dict) or payload.get("version") != _FORMAT_VERSION:
            raise ValueError("not an IdMap JSON payload (version 1)")
        ids = payload.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("IdMap JSON 'ids' must be a list of strings")
        out = cls.from_ids(ids)
        if len(out) != len(ids):
            raise ValueError("IdMap JSON contains duplicate ids")
        return out
