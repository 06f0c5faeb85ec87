"""New items: when they are (re)folded, and the fold from the users' vectors."""

from __future__ import annotations

import numpy as np

from models.foldin import fold_in_items, gram
from models.weighting import weighted_matrix
from stream_processors.new_items import decode_pending, due_for_fold, encode_pending, fold_items


def test_fold_at_threshold_then_each_doubling_up_to_cap() -> None:
    folds = [n for n in range(1, 60) if due_for_fold(n - 1, n, folded=n > 3, min_n=3, cap=40)]
    assert folds == [3, 6, 12, 24]
    assert not due_for_fold(0, 2, folded=False, min_n=3, cap=40)
    assert due_for_fold(0, 5, folded=False, min_n=3, cap=40)  # several at once
    assert due_for_fold(7, 9, folded=False, min_n=3, cap=40)  # never folded yet (no user had a vector)
    assert not due_for_fold(24, 100, folded=True, min_n=3, cap=40)  # past the cap: the refit takes over


def test_pending_entries_round_trip() -> None:
    assert decode_pending(encode_pending("u\u00e9-1", 5.0)) == ("u\u00e9-1", 5.0)
    assert decode_pending(encode_pending("u", 0.1234567).encode()) == ("u", 0.123457)


def test_fold_items_equals_fold_in_items_and_skips_users_without_vectors() -> None:
    rng = np.random.default_rng(1)
    vecs = {f"u{k}": rng.standard_normal(4).astype(np.float32) for k in range(5)}
    ug = gram(np.stack(list(vecs.values())))
    got = fold_items({"x": [("u1", 1.0), ("u3", 5.0), ("nobody", 1.0), ("u1", 1.0)], "y": [("ghost", 1.0)]},
                     vecs, ug, 0.1, 2.0)
    assert set(got) == {"x"}
    x = np.stack([vecs["u1"], vecs["u3"]])
    want = fold_in_items(x, ug, weighted_matrix([0, 0, 0], [0, 1, 0], [1.0, 5.0, 1.0], shape=(1, 2)), 0.1, 2.0)[0]
    np.testing.assert_allclose(got["x"], want, rtol=1e-5, atol=1e-6)
    assert fold_items({"y": [("ghost", 1.0)]}, vecs, ug, 0.1, 2.0) == {}


def test_folded_vectors_are_blended_with_content_vectors_by_count() -> None:
    from stream_processors.new_items import blend_content

    folded = {"a": np.array([0.0, 2.0], np.float32), "b": np.array([1.0, 1.0], np.float32)}
    content = {"a": np.array([4.0, 0.0], "<f4").tobytes(), "b": None}
    out = blend_content(folded, content, {"a": 3, "b": 3}, prior=1.0)
    np.testing.assert_allclose(out["a"], [1.0, 1.5])  # (3·fold + 1·content) / 4
    np.testing.assert_array_equal(out["b"], folded["b"])  # no metadata: the fold alone
    wrong = {"a": np.zeros(3, "<f4").tobytes()}  # another model's length: ignored
    np.testing.assert_array_equal(blend_content(folded, wrong, {"a": 3}, 1.0)["a"], folded["a"])
