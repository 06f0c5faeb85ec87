"""``streamrec catalog import FILE``: load a whole catalogue (CSV, JSON lines or Parquet) into Redis.

Each row is checked by the same rules as ``PUT /v1/items/{id}`` (:class:`online_api.schemas.ItemIn` and the
id rule); rejected rows are counted by reason, the first ones printed with their row number, and all of
them written to ``--rejects FILE`` when given. Accepted rows are written in pipelined chunks and, when the
serving model version has a content model, featurized at once (their content features for
``similar?kind=content`` and, for items without interactions, their vector), so they are recommendable
without waiting for the next refit.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from online_api.schemas import ItemIn
from streamrec.event_model import ID_RULE, MAX_ID_LEN, id_text_ok
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.catalog import put_items
from streamrec.store.content import read_part, store_item_content
from streamrec.store.models import current_version, load_model

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
CHUNK = 5_000
SHOWN_REJECTS = 10


@dataclass
class ColumnMap:
    """Which columns hold the id, category and availability; attribute renames; columns left out."""

    id: str = "item_id"
    category: str = "category"
    available: str = "available"
    rename: dict[str, str] = field(default_factory=dict)  # file column -> attribute name
    drop: frozenset[str] = frozenset()


@dataclass
class Report:
    read: int = 0
    accepted: int = 0
    featurized: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, seconds: float) -> dict[str, Any]:
        return {"read": self.read, "accepted": self.accepted, "rejected": self.read - self.accepted,
                "featurized": self.featurized, "rejected_by_reason": dict(self.reasons.most_common()),
                "seconds": round(seconds, 3), "items_per_s": round(self.accepted / seconds) if seconds > 0 else None}


def read_rows(path: Path, fmt: str | None) -> pd.DataFrame:
    """The file as a table (format from ``fmt`` or the file's extension)."""
    kind = fmt or FORMATS.get(path.suffix.lower())
    if kind == "csv":
        return pd.read_csv(path, dtype_backend="numpy_nullable", keep_default_na=True)
    if kind == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if kind == "parquet":
        return pd.read_parquet(path)
    raise ValueError(f"cannot tell the format of {path.name}: give --format csv, jsonl or parquet")


def _plain(value: Any) -> Any:
    """A cell as JSON data: missing → None, numpy scalars → Python numbers."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def to_entry(row: dict[str, Any], m: ColumnMap) -> dict[str, Any]:
    """One row as a catalogue entry (raises ValueError with the reason when it is not a valid one)."""
    raw_id = _plain(row.get(m.id))
    if raw_id is None:
        raise ValueError(f"missing id ({m.id})")
    item_id = str(raw_id)
    if not 0 < len(item_id) <= MAX_ID_LEN or not id_text_ok(item_id):
        raise ValueError(f"id: {ID_RULE}")
    attrs = {m.rename.get(k, k): v for k, v in ((k, _plain(v)) for k, v in row.items())
             if k not in (m.id, m.category, m.available) and k not in m.drop and v is not None}
    body: dict[str, Any] = {"attributes": attrs}
    if _plain(row.get(m.category)) is not None:
        body["category"] = str(_plain(row[m.category]))
    available = _plain(row.get(m.available))
    if available is not None:
        body["available"] = available if isinstance(available, bool) else str(available).lower() in ("1", "true")
    try:
        item = ItemIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None
    return {"item_id": item_id, "category": item.category, "available": item.available, **item.attributes}


def entries(frame: pd.DataFrame, m: ColumnMap, report: Report) -> Iterator[dict[str, Any]]:
    """The valid entries of ``frame``; the invalid ones are recorded in ``report``."""
    for n, row in enumerate(frame.to_dict("records"), start=1):
        report.read += 1
        try:
            yield to_entry(row, m)
        except ValueError as exc:
            reason = str(exc)
            report.reasons[reason.split(":")[0]] += 1
            report.rejects.append({"row": n, "reason": reason, "id": _plain(row.get(m.id))})


def import_catalogue(settings: Settings, path: Path, m: ColumnMap, fmt: str | None = None,
                     progress: bool = True) -> Report:
    """Read, check and write a catalogue; featurize it with the serving version's content model."""
    frame = read_rows(path, fmt)
    report = Report()
    store = RedisStore(settings)
    try:
        version = current_version(store)
        part = read_part(store, version, "content") if version else None
        model = load_model(store, version) if part is not None else None
        base = set(model.item_ids) if model is not None else set()
        bar = tqdm(total=len(frame), unit="items", disable=not progress, file=sys.stderr, desc="catalog import")
        chunk: list[dict[str, Any]] = []
        for entry in entries(frame, m, report):
            chunk.append(entry)
            if len(chunk) >= CHUNK:
                _write(store, version, part, base, chunk, report)
                bar.update(report.read - bar.n)
                chunk = []
        _write(store, version, part, base, chunk, report)
        bar.update(report.read - bar.n)
        bar.close()
    finally:
        store.close()
    return report


def _write(store: RedisStore, version: str | None, part: Any, base: set[str], chunk: list[dict[str, Any]],
           report: Report) -> None:
    if not chunk:
        return
    report.accepted += put_items(store, chunk)
    if part is not None and version is not None:
        report.featurized += store_item_content(store, version, part, chunk, base.__contains__)
