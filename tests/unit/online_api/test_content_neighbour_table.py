"""The API's content neighbours from the table the refit published are those of the per-item scan, also
for items written after the refit (appended to the view, the table extended) and updated ones."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.content import ContentConfig, fit_featurizer, normalized_rows
from models.content_neighbours import neighbour_table
from online_api.content import ContentService, ContentView, _with_table
from streamrec.settings import Settings
from streamrec.store.content import ContentPart

CATS = ("tea", "coffee", "soap", "toys")


def _records(n: int, start: int = 0) -> dict[str, dict[str, str]]:
    return {f"i{i:03d}": {"category": CATS[i % 4], "title": f"{CATS[(i * 7) % 4]} pack {i % 5}"}
            for i in range(start, start + n)}


def _service(view: ContentView) -> ContentService:
    svc = ContentService(Settings(redis_url="redis://127.0.0.1:1/0", covis_top_n=6), None)  # type: ignore[arg-type]
    svc.view = view
    return svc


def test_published_neighbours_are_the_scan_even_for_items_written_since() -> None:
    published = _records(40)
    featurizer = fit_featurizer(list(published.values()), ContentConfig())
    table_ids = sorted(published)
    table = neighbour_table(normalized_rows(featurizer.transform([published[i] for i in table_ids])), 6)
    later = _records(5, start=40)  # PUT after the refit: read with the features, not in the table
    everything = published | later
    ids = sorted(everything)
    matrix = sp.csr_matrix(featurizer.transform([everything[i] for i in ids]))
    empty = ContentView("v1", 0, ContentPart(featurizer, None), None)
    tabled = _service(_with_table(empty, ids, matrix, table_ids, table))
    scanned = _service(ContentView("v1", 0, ContentPart(featurizer, None), None, ids,
                                   {i: n for n, i in enumerate(ids)}, normalized_rows(matrix),
                                   np.ones(len(ids), dtype=np.bool_)))
    assert tabled.view is not None and tabled.view.table is not None
    for item in ids:
        assert tabled.neighbours(item) == scanned.similar(item, 6, frozenset()), item
    # an update of i003 to another category: its old row leaves the lists, its new row ranks at once
    update = sp.csr_matrix(featurizer.transform([{"category": "toys", "title": "toys pack 1"}]))
    for svc in (tabled, scanned):
        assert svc.view is not None
        svc.view = svc.view.with_rows(1, ["i003"], update)
    assert tabled.view is not None and tabled.view.table is not None
    for item in ids:
        assert tabled.neighbours(item) == scanned.similar(item, 6, frozenset()), item
    assert all(CATS[int(i[1:]) % 4] == "toys" or i == "i003" for i, _ in tabled.neighbours("i003"))
