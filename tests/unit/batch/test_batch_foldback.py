"""Re-fold inputs: a user's Redis history as the weighted row the worker would fold."""

from __future__ import annotations

import pytest

from batch.foldback import _user_of, history_matrix
from streamrec.store.users import Interaction

DAY_MS = 86_400_000
NOW = 1_800_000_000_000


def test_history_rows_sum_duplicates_decay_and_skip_unknown_items() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    histories = [
        [Interaction("a", 1.0, NOW, "click"), Interaction("a", 5.0, NOW - DAY_MS, "purchase"),
         Interaction("new-item", 1.0, NOW, "click")],
        [],
        [Interaction("c", 2.0, NOW - 2 * DAY_MS, "click")],
    ]
    plain = history_matrix(histories, index, None, NOW).toarray()
    assert plain.tolist() == [[6.0, 0, 0], [0, 0, 0], [0, 0, 2.0]]
    decayed = history_matrix(histories, index, 86_400.0, NOW).toarray()
    assert decayed[0, 0] == pytest.approx(1.0 + 2.5) and decayed[2, 2] == pytest.approx(0.5)


def test_user_of_an_event_is_its_key_or_its_decoded_user() -> None:
    assert _user_of(b"u-1", b"garbage") == "u-1"
    value = b'{"event_id":"00000000-0000-4000-8000-000000000001","user_id":"u-2","item_id":"i","type":"click",' \
            b'"ts":1700000000000}'
    assert _user_of(None, value) == "u-2"
    assert _user_of(None, b"garbage") is None and _user_of(b"\xff", value) is None
