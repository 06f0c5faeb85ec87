"""Personal candidates and similar items: through the model's item index when it has one, else the exact scan.

Both lanes sit behind the same functions and answer the same thing (the best eligible items by exact
score; tests/unit/online_api/test_api_retrieval.py runs both on one state). The index lane asks
:func:`models.ann.top_eligible` for candidates, which applies the filters exactly and re-scores every
candidate with the float32 factors; when the filters leave too few candidates it answers None and the exact
scan answers instead, so a filtered item never leaks and an answer is never shorter than the scan's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.ann import top_eligible
from models.scoring import top_k
from online_api.cache import ServedModel, View
from online_api.topk import top_candidates

IntArray = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


def _allowed(view: View, usable: BoolArray | None) -> tuple[BoolArray | None, int | None]:
    if usable is not None:
        return usable, None  # counted by top_eligible (category requests only)
    return view.available_mask, view.n_available if view.available_mask is not None else None


def personal_top(view: View, vec: F32, n: int, drop: IntArray, usable: BoolArray | None) -> tuple[IntArray, F32]:
    """The best ``n`` finite scores ``factors · vec`` among usable items outside ``drop``, best first (ties
    to the lower index). ``usable`` None: the available items. ``drop`` may hold indices past the model's."""
    model = view.model
    assert model is not None
    inside = drop[(drop >= 0) & (drop < len(model.item_ids))]
    if model.ann is not None:
        allowed, n_allowed = _allowed(view, usable)
        got = top_eligible(model.ann.dot, model.factors, vec, n, allowed=allowed, n_allowed=n_allowed, drop=inside)
        if got is not None:
            cand, scores = got
            order = top_k(scores, n)
            best, vals = cand[order], scores[order]
            keep = np.isfinite(vals)
            return best[keep], vals[keep]
    scores = vec @ model.factors_t  # the scan over every item: the dominant cost of a request without an index
    if usable is not None:
        scores[~usable] = -np.inf
    else:
        scores[view.unavailable_idx] = -np.inf
    if len(inside):
        scores[inside] = -np.inf
    best = top_candidates(scores, min(n, len(scores)))
    vals = scores[best]
    keep = np.isfinite(vals)
    return best[keep], vals[keep]


def blend_candidates(view: View, vec: F32, k: int, drop: IntArray) -> tuple[IntArray, F32] | None:
    """For the ALS-only blend through the index: available rows outside ``drop`` holding the best ``k`` by
    personal score, plus the trending rows (the only ones the blend raises), with exact personal scores,
    positions ascending. None without an index or when too few remain (the caller scans exactly)."""
    model = view.model
    if model is None or model.ann is None:
        return None
    inside = drop[(drop >= 0) & (drop < len(model.item_ids))]
    return top_eligible(model.ann.dot, model.factors, vec, k, allowed=view.available_mask,
                        n_allowed=view.n_available if view.available_mask is not None else None, drop=inside,
                        extra=view.trend_idx)


def similar_top(view: View, item: int, n: int) -> tuple[IntArray, F32]:
    """The ``n`` available items most cosine-similar to row ``item`` (itself excluded), best first; with an
    index, through its cosine index (:class:`models.ann.ItemIndexes`)."""
    model = view.model
    assert model is not None
    if model.ann is None:
        from models.similarity import similar_items

        return similar_items(item, model.factors, n, normed=model.normed, candidate_mask=view.available_mask)
    norm = float(model.norms[item])
    unit = model.factors[item] / norm if norm > 0 else model.factors[item]
    drop = np.array([item], dtype=np.int64)
    # The cosine index (unit rows) finds the candidates; their exact dot products with the unit query,
    # divided by their norms, rank them.
    got = top_eligible(model.ann.cosine, model.factors, unit, n, allowed=view.available_mask,
                       n_allowed=view.n_available if view.available_mask is not None else None, drop=drop)
    if got is not None:
        cand, dots = got
    else:  # the exact scan
        keep = np.ones(len(model.item_ids), dtype=np.bool_) if view.available_mask is None \
            else view.available_mask.copy()
        keep[item] = False
        cand = np.flatnonzero(keep).astype(np.int64)
        dots = (model.factors @ unit)[cand]
    cos = _cosine(model, cand, dots, 1.0 if norm > 0 else 0.0)
    order = top_k(cos, n)
    return cand[order], cos[order].astype(np.float32)


def _cosine(model: ServedModel, rows: IntArray, dots: F32, norm: float) -> F32:
    """Cosine from dot products with a query of length ``norm``; an all-zero row (or query) has cosine 0
    with everything, as in :func:`models.similarity.normalize_rows`."""
    denom = model.norms[rows] * norm
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0).astype(np.float32)
