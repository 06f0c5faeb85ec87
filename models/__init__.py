"""streamrec's numeric core: weighting, id maps, ALS training, exact fold-in, scoring, evaluation.

Pure numpy/scipy (plus implicit for full training): no I/O, no services. Arrays in, arrays out.
"""

from models.explain import Explanation, explain
from models.foldin import fold_in_items, fold_in_users, gram
from models.ids import IdMap
from models.metrics import (
    catalogue_coverage,
    evaluate,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from models.scoring import eligible_mask, recommend, recommend_batch, top_k
from models.similarity import normalize_rows, similar_items
from models.training import ALSModelFactors, ALSParams, to_implicit, train_als
from models.weighting import (
    CLICK,
    EVENT_TYPES,
    PURCHASE,
    WeightingConfig,
    build_user_items,
    decay_factors,
    event_weight,
    event_weights,
    weighted_matrix,
)

__all__ = [
    "CLICK",
    "EVENT_TYPES",
    "PURCHASE",
    "ALSModelFactors",
    "ALSParams",
    "Explanation",
    "IdMap",
    "WeightingConfig",
    "build_user_items",
    "catalogue_coverage",
    "decay_factors",
    "eligible_mask",
    "evaluate",
    "event_weight",
    "event_weights",
    "explain",
    "fold_in_items",
    "fold_in_users",
    "gram",
    "hit_rate_at_k",
    "map_at_k",
    "ndcg_at_k",
    "normalize_rows",
    "precision_at_k",
    "recall_at_k",
    "recommend",
    "recommend_batch",
    "similar_items",
    "to_implicit",
    "top_k",
    "train_als",
    "weighted_matrix",
]
