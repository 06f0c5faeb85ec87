"""``streamrec catalog bench``: ``catalog import`` throughput on a synthetic catalogue, in an isolated Redis
prefix (removed after), without and with a published content model (then every row is featurized too)."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from models.content import fit_featurizer
from models.ridge import fit_ridge
from ops.catalog_import import ColumnMap, import_catalogue
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.content import ContentPart, write_part

WORDS = ("red", "blue", "runner", "boot", "coffee", "tea", "vinyl", "tent", "serum", "jacket", "notebook", "lamp",
         "organic", "classic", "travel", "mini", "deluxe", "wool", "steel", "bamboo")


def synthetic_csv(path: Path, items: int, seed: int) -> None:
    """``items`` rows: id, one of 20 categories, a 4-word title, one of 300 brands, a price."""
    rng = np.random.default_rng(seed)
    titles = rng.choice(len(WORDS), size=(items, 4))
    prices = rng.uniform(1, 200, items)
    with path.open("w") as fh:
        fh.write("item_id,category,title,brand,price\n")
        for i in range(items):
            title = " ".join(WORDS[w] for w in titles[i])
            fh.write(f"bench-{i},c{i % 20},{title} {i},brand{i % 300},{prices[i]:.2f}\n")


def _publish_content_model(settings: Settings, store: RedisStore, seed: int) -> None:
    """A content model fitted on 2,000 synthetic records to random 64-factor targets, as the current version."""
    rng = np.random.default_rng(seed)
    records = [{"category": f"c{i % 20}", "title": " ".join(rng.choice(WORDS, 4)), "brand": f"brand{i % 300}",
                "price": float(rng.uniform(1, 200))} for i in range(2_000)]
    featurizer = fit_featurizer(records, settings.content_config())
    ridge = fit_ridge(featurizer.transform(records), rng.normal(size=(2_000, 64)), 1.0)
    write_part(store, "vbench", "content", ContentPart(featurizer, ridge), 64)
    store.client.set(store.keys.current, "vbench")


def run(settings: Settings, items: int = 50_000, seed: int = 7) -> dict[str, Any]:
    """Import the same file twice (plain, then featurized); items/s of each."""
    bench = settings.model_copy(update={"redis_prefix": f"bench-catalog-{uuid.uuid4().hex[:8]}"})
    store = RedisStore(bench)
    out: dict[str, Any] = {"items": items, "prefix": bench.redis_prefix}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "catalogue.csv"
            synthetic_csv(path, items, seed)
            for label in ("plain", "featurized"):
                if label == "featurized":
                    _publish_content_model(bench, store, seed)
                started = time.perf_counter()
                report = import_catalogue(bench, path, ColumnMap(), progress=False)
                seconds = time.perf_counter() - started
                out[label] = {"seconds": round(seconds, 3), "items_per_s": round(report.accepted / seconds),
                              "featurized": report.featurized}
    finally:
        store.delete_prefix()
        store.close()
    return out
