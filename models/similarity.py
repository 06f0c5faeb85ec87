"""Item-to-item cosine similarity on latent factors ("customers also liked")."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.scoring import top_k


def normalize_rows(factors: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Unit-length rows in float32; all-zero rows stay zero (cosine 0 with everything).

    Compute once per model and pass as ``normed`` to :func:`similar_items`.
    """
    f = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    # implicit substitutes 1e-10 for zero norms too; the row stays 0 instead of becoming NaN
    norms[norms == 0] = 1e-10
    return np.ascontiguousarray(f / norms, dtype=np.float32)


def similar_items(
    item_idx: int,
    item_factors: npt.ArrayLike,
    k: int,
    *,
    normed: npt.NDArray[np.float32] | None = None,
    candidate_mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``k`` items most cosine-similar to ``item_idx`` (itself excluded), best first.

    ``candidate_mask`` optionally restricts results (e.g. in-stock items of one category).
    """
    unit = normalize_rows(item_factors) if normed is None else normed
    n_items = unit.shape[0]
    if not 0 <= item_idx < n_items:
        raise IndexError(f"item index {item_idx} out of range [0, {n_items})")
    scores = unit @ unit[item_idx]
    keep = np.ones(n_items, dtype=np.bool_) if candidate_mask is None else candidate_mask.copy()
    keep[item_idx] = False
    cand = np.flatnonzero(keep)
    best = top_k(scores[cand], k)
    return cand[best].astype(np.int64), scores[cand][best].astype(np.float32)
