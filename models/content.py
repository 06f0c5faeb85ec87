"""Content features of catalogue items and user profiles: a fitted, serialisable featurizer.

A record is a flat mapping of attributes (text, numbers, booleans, null). Its feature vector has three
blocks, each scaled to unit length and then by its block weight, so one block cannot drown the others:

* text: the record's text fields (``title``, ``description``, ...) joined, as TF-IDF over the vocabulary
  scikit-learn's :class:`~sklearn.feature_extraction.text.TfidfVectorizer` fitted (sublinear tf, smooth
  idf, l2 norm); :meth:`Featurizer.transform` recomputes it from the vocabulary and idf alone, so a
  published featurizer is JSON plus one float32 array, never a pickle;
* categorical: ``field=value`` for every other text or boolean attribute (tag fields split on commas),
  hashed (CRC-32, stable across processes) into ``hash_buckets`` columns: new brands or categories need no
  refit to get a column;
* numeric: each numeric field seen at fit time, one-hot in quantile bins fitted then.

Pure numpy/scipy/scikit-learn: no I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

if TYPE_CHECKING:  # scikit-learn is imported where text is featurized: it costs a second and ~110 MB to load,
    from sklearn.feature_extraction.text import TfidfVectorizer  # which a process that never featurizes skips

Record = Mapping[str, Any]
F32 = npt.NDArray[np.float32]
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default


@dataclass(frozen=True)
class ContentConfig:
    """How records become features (settings ``STREAMREC_CONTENT_*``)."""

    text_fields: tuple[str, ...] = ("title", "name", "description")
    tag_fields: tuple[str, ...] = ("tags",)
    max_terms: int = 2_000
    min_df: int = 1
    hash_buckets: int = 512
    numeric_bins: int = 8
    weight_text: float = 1.0
    weight_categorical: float = 1.0
    weight_numeric: float = 0.5


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def text_of(record: Record, fields: Sequence[str]) -> str:
    """The record's text fields joined by spaces (missing and non-text ones left out)."""
    return " ".join(str(record[f]) for f in fields if isinstance(record.get(f), str))


def categorical_terms(record: Record, cfg: ContentConfig, numeric_fields: Iterable[str]) -> list[str]:
    """``field=value`` terms of the record's categorical attributes (lower-cased, tags split on commas)."""
    skip = {*cfg.text_fields, *numeric_fields}
    terms = []
    for key, value in record.items():
        if key in skip or value is None:
            continue
        if isinstance(value, bool):
            terms.append(f"{key}={str(value).lower()}")
        elif isinstance(value, str):
            parts = value.split(",") if key in cfg.tag_fields else [value]
            terms += [f"{key}={p.strip().lower()}" for p in parts if p.strip()]
        elif _numeric(value):  # a number in a field that was not numeric at fit time: a category (e.g. a code)
            terms.append(f"{key}={value:g}")
    return terms


def bucket_of(term: str, buckets: int) -> int:
    """A term's hashed column: CRC-32, the same in every process (Python's ``hash`` is salted)."""
    return zlib.crc32(term.encode("utf-8")) % buckets


@dataclass(frozen=True)
class Featurizer:
    """A fitted featurizer: TF-IDF vocabulary and idf, hashed categoricals, numeric bin edges."""

    cfg: ContentConfig
    vocabulary: list[str]
    idf: F32
    bin_edges: dict[str, list[float]]
    _term_index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _bucket_cache: dict[str, int] = field(default_factory=dict, compare=False, repr=False)  # term → column

    def __post_init__(self) -> None:
        if not self._term_index:
            object.__setattr__(self, "_term_index", {t: i for i, t in enumerate(self.vocabulary)})

    @property
    def n_features(self) -> int:
        return len(self.vocabulary) + self.cfg.hash_buckets + sum(len(e) + 1 for e in self.bin_edges.values())

    def transform(self, records: Sequence[Record]) -> sp.csr_matrix:
        """The feature rows of ``records`` (float32 CSR, ``len(records)`` × :attr:`n_features`), a block at a
        time over all records (a catalogue import featurizes thousands per call)."""
        blocks = [self._text(records) * np.float32(self.cfg.weight_text),
                  self._categorical(records) * np.float32(self.cfg.weight_categorical),
                  self._numbers(records) * np.float32(self.cfg.weight_numeric)]
        return sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float32)

    def _text(self, records: Sequence[Record]) -> sp.csr_matrix:
        """TF-IDF as TfidfVectorizer's transform: sublinear tf × idf, rows l2-normalised."""
        n = len(records)
        if not self.vocabulary:
            return sp.csr_matrix((n, 0), dtype=np.float32)
        from sklearn.feature_extraction.text import CountVectorizer

        counts = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, vocabulary=self._term_index,
                                 dtype=np.float32).transform([text_of(r, self.cfg.text_fields) for r in records])
        counts.data = np.log(counts.data) + 1.0
        return normalized_rows(counts @ sp.diags(self.idf))

    def _categorical(self, records: Sequence[Record]) -> sp.csr_matrix:
        """Hashed ``field=value`` terms, each record's row scaled to unit length."""
        buckets, cache = self.cfg.hash_buckets, self._bucket_cache
        if len(cache) > 200_000:  # bounded: values come from requests and files
            cache.clear()
        cols: list[int] = []
        indptr = [0]
        for record in records:
            row = set()
            for term in categorical_terms(record, self.cfg, self.bin_edges):
                col = cache.get(term)
                if col is None:
                    col = cache[term] = bucket_of(term, buckets)
                row.add(col)
            cols += sorted(row)
            indptr.append(len(cols))
        ones = np.ones(len(cols), dtype=np.float32)
        matrix = sp.csr_matrix((ones, np.array(cols, dtype=np.int32), np.array(indptr)), shape=(len(records), buckets))
        return normalized_rows(matrix)

    def _numbers(self, records: Sequence[Record]) -> sp.csr_matrix:
        """One-hot bins of each numeric field, each record's row scaled to unit length."""
        rows, cols = [], []
        base = 0
        for name, edges in self.bin_edges.items():
            at = [(r, float(rec[name])) for r, rec in enumerate(records) if _numeric(rec.get(name))]
            if at:
                bins = np.searchsorted(np.asarray(edges), np.array([v for _, v in at]), side="right")
                rows += [r for r, _ in at]
                cols += (base + bins).tolist()
            base += len(edges) + 1
        matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(records), base))
        return normalized_rows(matrix)

    def to_json(self) -> dict[str, Any]:
        """Everything but the idf array, as JSON-ready data (the idf is stored as raw float32)."""
        c = self.cfg
        return {"config": {"text_fields": list(c.text_fields), "tag_fields": list(c.tag_fields),
                           "max_terms": c.max_terms, "min_df": c.min_df, "hash_buckets": c.hash_buckets,
                           "numeric_bins": c.numeric_bins, "weight_text": c.weight_text,
                           "weight_categorical": c.weight_categorical, "weight_numeric": c.weight_numeric},
                "vocabulary": self.vocabulary, "bin_edges": self.bin_edges}

    @staticmethod
    def from_json(data: Mapping[str, Any], idf: npt.ArrayLike) -> Featurizer:
        """The featurizer :meth:`to_json` described, with its idf array."""
        c = dict(data["config"])
        cfg = ContentConfig(**{**c, "text_fields": tuple(c["text_fields"]), "tag_fields": tuple(c["tag_fields"])})
        idf_arr = np.asarray(idf, dtype=np.float32)
        vocab = list(data["vocabulary"])
        if len(idf_arr) != len(vocab):
            raise ValueError(f"{len(vocab)} terms but {len(idf_arr)} idf values")
        return Featurizer(cfg, vocab, idf_arr, {k: [float(x) for x in v] for k, v in data["bin_edges"].items()})


def _vectorizer(cfg: ContentConfig, vocabulary: Sequence[str] | None = None) -> TfidfVectorizer:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, sublinear_tf=True, smooth_idf=True,
                           norm="l2", max_features=cfg.max_terms, min_df=cfg.min_df, dtype=np.float32,
                           vocabulary=vocabulary)


def fit_featurizer(records: Sequence[Record], cfg: ContentConfig | None = None) -> Featurizer:
    """Fit the TF-IDF vocabulary and idf and the numeric bins on ``records``."""
    cfg = cfg or ContentConfig()
    docs = [text_of(r, cfg.text_fields) for r in records]
    vocab: list[str] = []
    idf = np.zeros(0, dtype=np.float32)
    if any(d.strip() for d in docs):
        vec = _vectorizer(cfg)
        try:
            vec.fit(docs)
            vocab = [str(t) for t in vec.get_feature_names_out()]
            idf = vec.idf_.astype(np.float32)
        except ValueError:  # no term survives min_df (or only stop words): no text block
            pass
    return Featurizer(cfg, vocab, idf, _fit_bins(records, cfg))


def _fit_bins(records: Sequence[Record], cfg: ContentConfig) -> dict[str, list[float]]:
    """Quantile bin edges of each field that is numeric in every record holding it."""
    values: dict[str, list[float]] = {}
    other: set[str] = set(cfg.text_fields)
    for r in records:
        for key, value in r.items():
            if _numeric(value):
                values.setdefault(key, []).append(float(value))
            elif value is not None:
                other.add(key)
    edges = {}
    for key in sorted(values.keys() - other):
        qs = np.quantile(np.array(values[key]), np.linspace(0, 1, cfg.numeric_bins + 1)[1:-1])
        edges[key] = sorted({float(q) for q in qs})
    return edges


def normalized_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit length (empty rows stay empty), so a row product is a cosine."""
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags((1.0 / norms).astype(np.float32)) @ m)
