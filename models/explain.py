"""Why was an item recommended? Per-history-item contributions, as implicit's ALS ``explain``.

With ``W_u = A_u⁻¹`` (the user's fold-in system, see ``models.foldin``) the predicted score
decomposes over the history: ``score(i) = y_iᵀ x_u = Σ_j c_j (y_iᵀ W_u y_j)`` (Hu, Koren &
Volinsky 2008, section 5). Like implicit 0.7.3 we use ``c_j = alpha * w_j``, build A_u in
float64, Cholesky-factor it, and skip entries with negative confidence.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.linalg


class Explanation(NamedTuple):
    """Total predicted score and the top (history item index, contribution) pairs, best first."""

    score: float
    contributions: list[tuple[int, float]]


def explain(
    user_history_items: npt.ArrayLike,
    user_history_weights: npt.ArrayLike,
    item_idx: int,
    item_factors: npt.ArrayLike,
    gram: npt.ArrayLike,
    regularization: float,
    alpha: float,
    n: int = 5,
) -> Explanation:
    """Explain the score of ``item_idx`` for a user given by raw history weights.

    Matches ``AlternatingLeastSquares.explain(userid, user_items, itemid, N=n)``: same total,
    same contributions (ties broken towards the higher item index, as its heap does).
    """
    y = np.asarray(item_factors)
    items = np.asarray(user_history_items, dtype=np.int64).ravel()
    weights = np.asarray(user_history_weights).ravel()
    if items.shape != weights.shape:
        raise ValueError("need one weight per history item")
    n_items = y.shape[0]
    if not 0 <= item_idx < n_items or (items.size and (items.min() < 0 or items.max() >= n_items)):
        raise IndexError(f"item index out of range for {n_items} factor rows")
    if not np.issubdtype(weights.dtype, np.floating):
        weights = weights.astype(np.float64)
    # implicit scales the CSR in its own dtype and does not cast to float32 here
    conf = (alpha * weights if alpha != 1.0 else weights).astype(np.float64)

    f = y.shape[1]
    yu = y[items].astype(np.float64)
    a = np.asarray(gram, dtype=np.float64) + regularization * np.eye(f)
    a += (yu.T * (np.abs(conf) - 1.0)) @ yu
    weighted_item = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), y[item_idx].astype(np.float64))

    scores = (yu @ weighted_item) * conf
    used = conf >= 0  # implicit skips dislikes (c < 0) when explaining
    total = float(scores[used].sum())
    ranked = sorted(zip(scores[used].tolist(), items[used].tolist(), strict=True), reverse=True)
    return Explanation(total, [(item, score) for score, item in ranked[: max(n, 0)]])
