"""Content features (models/content.py) against scikit-learn's own TF-IDF, and their serialised form."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from models.content import ContentConfig, Featurizer, bucket_of, fit_featurizer, normalized_rows

DOCS = [
    {"title": "Red running shoes", "description": "Light shoes for running on roads"},
    {"title": "Blue rain jacket", "description": "A jacket that keeps the rain out"},
    {"title": "Trail running shoes", "description": "Grippy shoes for trail running, not roads"},
    {"title": "Wool socks", "description": "Warm socks, for hiking and running"},
    {"title": "Rain boots"},
]
TEXT_ONLY = ContentConfig(hash_buckets=4)


def text_block(f: Featurizer, records: list[dict]) -> np.ndarray:
    return f.transform(records).toarray()[:, : len(f.vocabulary)]


def test_text_block_is_scikit_learns_tfidf() -> None:
    f = fit_featurizer(DOCS, TEXT_ONLY)
    ref = TfidfVectorizer(sublinear_tf=True).fit([" ".join(v for v in d.values()) for d in DOCS])
    assert f.vocabulary == list(ref.get_feature_names_out())
    np.testing.assert_allclose(f.idf, ref.idf_, rtol=1e-6)
    new = [{"title": "Running jacket for rain and roads"}, {"title": "nothing known here"}]
    np.testing.assert_allclose(text_block(f, DOCS), ref.transform([" ".join(d.values()) for d in DOCS]).toarray(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(text_block(f, new), ref.transform([d["title"] for d in new]).toarray(),
                               rtol=1e-5, atol=1e-6)


def test_max_terms_keeps_the_most_frequent_like_scikit_learn() -> None:
    cfg = ContentConfig(max_terms=5)
    f = fit_featurizer(DOCS, cfg)
    ref = TfidfVectorizer(sublinear_tf=True, max_features=5).fit([" ".join(d.values()) for d in DOCS])
    assert f.vocabulary == list(ref.get_feature_names_out())


def test_json_round_trip_transforms_alike() -> None:
    records = [{**d, "brand": "acme" if i % 2 else "zeta", "price": 10.0 * i, "tags": "sale, new"}
               for i, d in enumerate(DOCS)]
    f = fit_featurizer(records)
    back = Featurizer.from_json(json.loads(json.dumps(f.to_json())), np.frombuffer(f.idf.astype("<f4").tobytes(),
                                                                                    dtype="<f4"))
    a, b = f.transform(records), back.transform(records)
    assert a.shape == b.shape == (5, f.n_features)
    np.testing.assert_array_equal(a.toarray(), b.toarray())
    with pytest.raises(ValueError, match="idf"):
        Featurizer.from_json(f.to_json(), f.idf[:-1])


def test_categorical_terms_are_hashed_stably_and_tags_split() -> None:
    cfg = ContentConfig(hash_buckets=64)
    f = fit_featurizer([{"brand": "Acme"}], cfg)
    assert bucket_of("brand=acme", 64) == zlib.crc32(b"brand=acme") % 64  # the same in every process
    row = f.transform([{"brand": " ACME ", "tags": "Sale,new,", "vegan": True}]).toarray()[0]
    cols = {bucket_of(t, 64) for t in ("brand=acme", "tags=sale", "tags=new", "vegan=true")}
    assert set(np.flatnonzero(row)) == cols
    assert np.linalg.norm(row) == pytest.approx(1.0)  # a block has unit length times its weight
    # a brand never seen at fit time still gets its column (no refit needed)
    unseen = f.transform([{"brand": "newco"}]).toarray()[0]
    assert np.flatnonzero(unseen).tolist() == [bucket_of("brand=newco", 64)]


def test_numbers_are_binned_at_fitted_quantiles() -> None:
    records = [{"price": float(p)} for p in range(1, 101)]
    f = fit_featurizer(records, ContentConfig(numeric_bins=4, hash_buckets=8))
    assert f.bin_edges == {"price": pytest.approx([25.75, 50.5, 75.25])}
    rows = f.transform([{"price": 1.0}, {"price": 60.0}, {"price": 1e6}, {"price": None}]).toarray()
    base = len(f.vocabulary) + 8
    assert [np.flatnonzero(r).tolist() for r in rows] == [[base], [base + 2], [base + 3], []]
    assert rows[0, base] == pytest.approx(0.5)  # the numeric block's default weight
    # a field that is text in some records is categorical, never binned
    mixed = fit_featurizer([{"size": 3}, {"size": "XL"}], ContentConfig(hash_buckets=8))
    assert mixed.bin_edges == {}


def test_blocks_are_each_unit_length_times_their_weight() -> None:
    cfg = ContentConfig(hash_buckets=32, weight_text=2.0, weight_categorical=1.0, weight_numeric=0.5)
    f = fit_featurizer([{**d, "brand": "b", "price": 5.0 + i} for i, d in enumerate(DOCS)], cfg)
    row = f.transform([{"title": "running shoes", "brand": "b", "price": 6.0}]).toarray()[0]
    v = len(f.vocabulary)
    assert np.linalg.norm(row[:v]) == pytest.approx(2.0)
    assert np.linalg.norm(row[v : v + 32]) == pytest.approx(1.0)
    assert np.linalg.norm(row[v + 32 :]) == pytest.approx(0.5)


def test_no_text_at_all_fits_without_a_vocabulary() -> None:
    f = fit_featurizer([{"segment": "family", "age": 30}, {"segment": "single", "age": 20}])
    assert f.vocabulary == [] and f.transform([{"segment": "family"}]).nnz == 1


def test_normalized_rows_are_unit_and_empty_rows_stay_empty() -> None:
    f = fit_featurizer(DOCS, TEXT_ONLY)
    m = normalized_rows(f.transform([*DOCS, {}]) * 3)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, [1, 1, 1, 1, 1, 0], atol=1e-6)
