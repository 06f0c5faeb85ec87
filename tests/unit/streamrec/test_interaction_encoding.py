"""The worker's bulk history encoding writes exactly what ``Interaction.encode`` does, and reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamrec.store.users import Interaction, encode_interactions

ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
rows = st.lists(st.tuples(ids, st.sampled_from([1.0, 3.0, 0.3333333, 2.5e-7]), st.integers(0, 2**53),
                          st.sampled_from(["view", "click", "add_to_cart", "purchase"])), max_size=30)


@given(rows)
def test_bulk_encoding_equals_one_by_one_and_decodes_back(batch: list[tuple[str, float, int, str]]) -> None:
    items, weights, ts, types = ([r[k] for r in batch] for k in range(4))
    bulk = encode_interactions(items, weights, ts, types)
    assert bulk == [Interaction(*r).encode() for r in batch]
    assert [Interaction.decode(x) for x in bulk] == [Interaction(i, float(f"{w:.6g}"), t, e)
                                                     for i, w, t, e in batch]
