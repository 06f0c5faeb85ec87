"""Top-k scoring of items for a user vector, with eligibility filters.

Filters combine as: ``candidate_mask`` AND ``allow`` AND NOT ``deny`` AND NOT ``exclude``.
Index arrays may contain indices outside ``[0, n_items)`` (e.g. ``-1`` for unknown ids, or items
newer than the factors); those are ignored rather than wrapped around by numpy indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

IndexOrMask = npt.NDArray[np.bool_] | npt.NDArray[np.integer] | Sequence[int]
_BATCH_CHUNK = 256  # users per dense score block in recommend_batch (256 × 50k float32 = 51 MB)


def top_k(scores: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.int64]:
    """Positions of the ``k`` largest scores, best first; ties go to the lower position.

    Uses ``argpartition`` so the cost is O(n + k log k) rather than a full sort.
    """
    n = scores.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.arange(n) if k == n else np.argpartition(-scores, k - 1)[:k]
    # lexsort's last key is primary: score descending, then position ascending for stable ties
    return part[np.lexsort((part, -scores[part]))].astype(np.int64)


def _index_mask(n_items: int, sel: IndexOrMask, name: str) -> npt.NDArray[np.bool_]:
    """Boolean mask from a boolean mask or an index array (out-of-range indices ignored)."""
    arr = np.asarray(sel)
    if arr.dtype == np.bool_:
        if arr.shape != (n_items,):
            raise ValueError(f"{name} mask has shape {arr.shape}, expected ({n_items},)")
        return arr
    idx = arr.astype(np.int64, copy=False).ravel()
    mask = np.zeros(n_items, dtype=np.bool_)
    mask[idx[(idx >= 0) & (idx < n_items)]] = True
    return mask


def eligible_mask(
    n_items: int,
    *,
    exclude: IndexOrMask | None = None,
    allow: IndexOrMask | None = None,
    deny: IndexOrMask | None = None,
    candidate_mask: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_] | None:
    """Combine the filters into one boolean mask, or ``None`` when every item is eligible."""
    if exclude is None and allow is None and deny is None and candidate_mask is None:
        return None
    keep = np.ones(n_items, dtype=np.bool_)
    if candidate_mask is not None:
        keep &= _index_mask(n_items, candidate_mask, "candidate_mask")
    if allow is not None:
        keep &= _index_mask(n_items, allow, "allow")
    for name, sel in (("deny", deny), ("exclude", exclude)):
        if sel is not None:
            keep &= ~_index_mask(n_items, sel, name)
    return keep


def recommend(
    user_vec: npt.ArrayLike,
    item_factors: npt.NDArray[np.floating],
    k: int,
    *,
    exclude: IndexOrMask | None = None,
    allow: IndexOrMask | None = None,
    deny: IndexOrMask | None = None,
    candidate_mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Top-``k`` eligible items for one user by dot product, best first.

    ``exclude`` is typically the items the user has seen (the caller decides whether to pass
    them); fewer than ``k`` results come back when fewer items are eligible.
    """
    n_items = item_factors.shape[0]
    user = np.asarray(user_vec, dtype=item_factors.dtype)
    keep = eligible_mask(n_items, exclude=exclude, allow=allow, deny=deny, candidate_mask=candidate_mask)
    if keep is None:
        scores = item_factors @ user
        best = top_k(scores, k)
        return best, scores[best].astype(np.float32)
    cand = np.flatnonzero(keep)
    # a small candidate set is cheaper to gather than to score the whole catalogue
    sub = item_factors[cand] @ user if 4 * len(cand) < n_items else (item_factors @ user)[cand]
    best = top_k(sub, k)
    return cand[best].astype(np.int64), sub[best].astype(np.float32)


def _exclusion_matrix(
    exclude: sp.spmatrix | sp.sparray | Sequence[IndexOrMask], n_users: int, n_items: int
) -> sp.csr_matrix:
    """Per-user exclusions as a boolean-ish CSR n_users×n_items (out-of-range columns dropped)."""
    if sp.issparse(exclude):
        coo = sp.coo_matrix(exclude)
        if coo.shape[0] != n_users:
            raise ValueError("exclude needs one row per user")
        keep = (coo.col >= 0) & (coo.col < n_items)
        rows, cols = coo.row[keep], coo.col[keep]
    else:
        if len(exclude) != n_users:
            raise ValueError("exclude needs one entry per user")
        per_user = [np.flatnonzero(_index_mask(n_items, e, "exclude")) for e in exclude]
        rows = np.repeat(np.arange(n_users), [len(c) for c in per_user])
        cols = np.concatenate(per_user) if per_user else np.zeros(0, dtype=np.int64)
    data = np.ones(len(rows), dtype=np.bool_)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, n_items))


def recommend_batch(
    user_vecs: npt.ArrayLike,
    item_factors: npt.NDArray[np.floating],
    k: int,
    *,
    exclude: sp.spmatrix | sp.sparray | Sequence[IndexOrMask] | None = None,
    allow: IndexOrMask | None = None,
    deny: IndexOrMask | None = None,
    candidate_mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Top-``k`` for many users at once: returns (B×k indices, B×k scores), best first.

    ``exclude`` is per user (a B×n_items sparse matrix of seen items, or one index array/mask
    per user); the other filters apply to everyone. Rows with fewer than ``k`` eligible items
    are padded with index -1 and score -inf. Ties go to the lower item index, as in
    :func:`recommend`.
    """
    users = np.atleast_2d(np.asarray(user_vecs, dtype=item_factors.dtype))
    n_users, n_items = users.shape[0], item_factors.shape[0]
    k = max(0, min(int(k), n_items))
    shared = eligible_mask(n_items, allow=allow, deny=deny, candidate_mask=candidate_mask)
    seen = None if exclude is None else _exclusion_matrix(exclude, n_users, n_items)
    out_idx = np.full((n_users, k), -1, dtype=np.int64)
    out_scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    if k == 0:
        return out_idx, out_scores
    for start in range(0, n_users, _BATCH_CHUNK):
        stop = min(start + _BATCH_CHUNK, n_users)
        scores = (users[start:stop] @ item_factors.T).astype(np.float32)
        if shared is not None:
            scores[:, ~shared] = -np.inf
        if seen is not None:
            block = seen[start:stop].tocoo()
            scores[block.row, block.col] = -np.inf
        if k < n_items:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(n_items), scores.shape)
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        best = np.take_along_axis(part, order, axis=1)
        best_scores = np.take_along_axis(part_scores, order, axis=1)
        valid = best_scores > -np.inf
        out_idx[start:stop] = np.where(valid, best, -1)
        out_scores[start:stop] = best_scores
    return out_idx, out_scores
