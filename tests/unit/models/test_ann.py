"""The item index: its answers re-ranked exactly equal the exact scan, filters never leak, new rows are found."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ann import AnnParams, IndexConfigError, ItemIndex, fetch_size, top_eligible
from models.scoring import top_k

F = 16
# Every list probed: the index lane is then exhaustive, so any difference from the scan is the lane's own.
EXHAUSTIVE = AnnParams(factory="IVF8,Flat", search="nprobe=8", min_fetch=50)
EXHAUSTIVE_MIPS = AnnParams(factory="IVF8,Flat", search="nprobe=8", min_fetch=50, mips=True)  # L2 order = dot order
HNSW = AnnParams(factory="HNSW16", search="efSearch=400", min_fetch=50, mips=True)
DEFAULT = AnnParams(min_fetch=50, max_fetch=400, mips=True)  # what the API builds for recommendations


def clustered(n: int, seed: int) -> np.ndarray:
    """Rows around a few centres with skewed norms, like ALS item factors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, F)).astype(np.float32)
    rows = centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, F)).astype(np.float32)
    return (rows * rng.lognormal(0, 0.4, (n, 1))).astype(np.float32)


def exact(y: np.ndarray, vec: np.ndarray, n: int, allowed: np.ndarray | None = None,
          drop: np.ndarray | None = None) -> np.ndarray:
    scores = (y @ vec).astype(np.float32)
    if allowed is not None:
        scores[~allowed] = -np.inf
    if drop is not None:
        scores[drop] = -np.inf
    best = top_k(scores, n)
    return best[np.isfinite(scores[best])]


def via_index(index: ItemIndex, y: np.ndarray, vec: np.ndarray, n: int, **kw: object) -> np.ndarray | None:
    got = top_eligible(index, y, vec, n, **kw)  # type: ignore[arg-type]
    if got is None:
        return None
    cand, scores = got
    return cand[top_k(scores, n)]


@pytest.mark.parametrize("params", [EXHAUSTIVE, EXHAUSTIVE_MIPS, HNSW], ids=["ivf", "ivf-mips", "hnsw"])
def test_index_answers_equal_the_exact_scan_on_a_small_catalogue(params: AnnParams) -> None:
    y = clustered(600, 0)
    index = ItemIndex.build(y, params)
    rng = np.random.default_rng(1)
    for _ in range(30):
        vec = rng.standard_normal(F).astype(np.float32)
        drop = rng.choice(600, 20, replace=False)
        allowed = rng.random(600) > 0.1
        for n in (1, 10) if params is HNSW else (1, 10, 40):  # HNSW is not exhaustive: the top 10 only
            got = via_index(index, y, vec, n, allowed=allowed, drop=drop)
            assert got is not None
            assert got.tolist() == exact(y, vec, n, allowed, drop).tolist()


def test_rows_added_after_the_build_are_found() -> None:
    y = clustered(500, 2)
    index = ItemIndex.build(y, DEFAULT)
    vec = np.random.default_rng(3).standard_normal(F).astype(np.float32)
    new = np.vstack([y, 50 * vec[None, :], -vec[None, :]]).astype(np.float32)  # a best row and a worst one
    got = via_index(index, new, vec, 10)
    assert got is not None and got[0] == 500
    assert got.tolist() == exact(new, vec, 10).tolist()
    cand, _ = top_eligible(index, new, vec, 10) or (np.zeros(0), None)
    assert {500, 501} <= set(cand.tolist())  # the tail is always scanned, whatever its scores


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), share=st.floats(0.0, 1.0),
       n_drop=st.integers(0, 80), tail=st.integers(0, 30))
def test_filters_never_leak_and_the_answer_is_never_short(seed: int, n: int, share: float, n_drop: int,
                                                          tail: int) -> None:
    rng = np.random.default_rng(seed)
    y = clustered(400 + tail, seed)
    index = ItemIndex.build(y[:400], DEFAULT)
    vec = rng.standard_normal(F).astype(np.float32)
    allowed = rng.random(len(y)) < share
    drop = rng.integers(-5, len(y) + 5, n_drop)  # out-of-range entries are ignored
    got = top_eligible(index, y, vec, n, allowed=allowed, drop=drop)
    expect = exact(y, vec, n, allowed, drop[(drop >= 0) & (drop < len(y))])
    if got is None:  # too selective or too few found: the caller scans exactly
        return
    cand, scores = got
    assert allowed[cand].all()
    assert not np.isin(cand, drop).any()
    assert np.all(np.diff(cand) > 0)
    np.testing.assert_allclose(scores, y[cand] @ vec, rtol=1e-5, atol=1e-5)
    assert len(cand[top_k(scores, n)]) == len(expect)


def test_too_selective_filters_ask_for_the_exact_scan() -> None:
    assert fetch_size(10, 0, 1.0, DEFAULT) == DEFAULT.min_fetch
    assert fetch_size(10, 0, 0.001, DEFAULT) is None
    assert fetch_size(10, 0, 0.0, DEFAULT) is None
    y = clustered(400, 4)
    index = ItemIndex.build(y, DEFAULT)
    allowed = np.zeros(400, dtype=np.bool_)
    allowed[:3] = True
    assert top_eligible(index, y, y[0], 10, allowed=allowed) is None


def test_ivf_lists_are_capped_by_the_catalogue_size() -> None:
    assert AnnParams(factory="IVF1024,Flat").nlist_for(6_400) == "IVF100,Flat"
    assert AnnParams(factory="IVF1024,Flat").nlist_for(10**6) == "IVF1024,Flat"
    assert AnnParams(factory="HNSW32").nlist_for(10) == "HNSW32"
    index = ItemIndex.build(clustered(50, 5), AnnParams(factory="IVF1024,Flat", search="nprobe=8"))  # 1 list
    assert index.n_indexed == 50


def test_a_bad_index_description_is_a_typed_error() -> None:
    with pytest.raises(IndexConfigError):
        ItemIndex.build(clustered(100, 6), AnnParams(factory="NoSuchIndex"))
    with pytest.raises(IndexConfigError):
        ItemIndex.build(clustered(100, 6), AnnParams(search="nosuchparam=3"))
