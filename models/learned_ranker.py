"""A learned ranker over the hybrid's candidates: LightGBM lambdarank on the sources and the user's history.

:func:`models.ranking.rank` orders candidates by a weighted sum of one normalised feature per source.
A tree ensemble can do what a sum cannot: trust "bought in 9 of the last 10 trips" more than "bought
once, long ago", weigh a repeat against how overdue it is, and use co-visitation only when the history
is thin. :func:`fit_ranker` fits LightGBM's lambdarank (it optimises NDCG@k over each query's
candidates directly) on queries captured in a validation replay, stopping early on the newest fifth of
them; :class:`LearnedRanker` scores one request's candidate matrix (columns :data:`FEATURES`).

The model is stored as LightGBM's own text format (``model_to_string``), never pickled, behind one
header line naming the feature columns, so a file written by ``streamrec eval`` is refused by a
process whose features differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.rank_features import HISTORY_FEATURES, ITEM_STATS
from models.ranking import SOURCES

F64 = npt.NDArray[np.float64]
SOURCE_COLUMNS = SOURCES
FEATURES = SOURCE_COLUMNS + HISTORY_FEATURES + ITEM_STATS
HEADER = "# streamrec learned ranker"
PARAMS = {"objective": "lambdarank", "metric": "ndcg", "learning_rate": 0.05, "num_leaves": 31,
          "min_data_in_leaf": 100, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
          "lambdarank_truncation_level": 20, "verbose": -1}


class RankerFileError(ValueError):
    """A ranker file that is not one, or was written for other feature columns."""


@dataclass(frozen=True)
class LearnedRanker:
    """A fitted LightGBM booster and the feature columns it expects, in order."""

    booster: object  # lightgbm.Booster (imported lazily: only processes that rank with a model need it)
    features: tuple[str, ...] = FEATURES
    iterations: int = 0

    def score(self, x: npt.ArrayLike) -> F64:
        """The ranking score of each row of ``x`` (one column per feature; NaN where missing)."""
        rows = np.asarray(x, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ValueError(f"expected {len(self.features)} feature columns, got shape {rows.shape}")
        if len(rows) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(rows, num_iteration=self.iterations or None,  # type: ignore[attr-defined]
                                               num_threads=1), dtype=np.float64)

    def to_text(self) -> str:
        """The header line (feature columns, iterations) then LightGBM's text model."""
        head = json.dumps({"features": list(self.features), "iterations": self.iterations})
        return f"{HEADER} {head}\n" + self.booster.model_to_string(num_iteration=self.iterations or None)  # type: ignore[attr-defined]

    @staticmethod
    def from_text(text: str, features: Sequence[str] = FEATURES) -> LearnedRanker:
        """Load :meth:`to_text`'s output; refuses a model for other feature columns."""
        import lightgbm as lgb

        first, _, body = text.partition("\n")
        if not first.startswith(HEADER):
            raise RankerFileError("not a streamrec ranker file (first line must start with "
                                  f"{HEADER!r})")
        try:
            head = json.loads(first[len(HEADER):])
        except json.JSONDecodeError as exc:
            raise RankerFileError(f"unreadable ranker header: {exc}") from exc
        if list(head.get("features", [])) != list(features):
            raise RankerFileError(f"the ranker was fitted on other feature columns: {head.get('features')}")
        try:
            booster = lgb.Booster(model_str=body)
        except lgb.basic.LightGBMError as exc:
            raise RankerFileError(f"unreadable LightGBM model: {exc}") from exc
        return LearnedRanker(booster, tuple(features), int(head.get("iterations", 0)))


@dataclass(frozen=True)
class Query:
    """One captured query: its candidates' feature rows and which candidates were relevant."""

    x: F64
    relevant: npt.NDArray[np.bool_]


def fit_ranker(queries: Sequence[Query], k: int = 10, seed: int = 0, rounds: int = 600,
               holdout: float = 0.2, threads: int = 0) -> LearnedRanker:
    """Lambdarank on ``queries`` (time order), early-stopped on NDCG@k of the newest ``holdout`` share.

    Queries without a relevant candidate teach lambdarank nothing and are left out.
    """
    import lightgbm as lgb

    useful = [q for q in queries if q.relevant.any() and len(q.relevant) > 1]
    if len(useful) < 10:
        raise ValueError(f"too few queries with a relevant candidate to fit a ranker ({len(useful)})")
    cut = max(1, min(len(useful) - 1, int(len(useful) * (1 - holdout))))

    def dataset(part: Sequence[Query], ref: lgb.Dataset | None = None) -> lgb.Dataset:
        return lgb.Dataset(np.vstack([q.x for q in part]), np.concatenate([q.relevant for q in part]).astype(int),
                           group=[len(q.relevant) for q in part], feature_name=list(FEATURES), reference=ref,
                           free_raw_data=True)

    train = dataset(useful[:cut])
    valid = dataset(useful[cut:], train)
    params = {**PARAMS, "eval_at": [k], "seed": seed, "num_threads": threads, "deterministic": True}
    booster = lgb.train(params, train, rounds, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    return LearnedRanker(booster, FEATURES, int(booster.best_iteration or rounds))
