"""The local stack's KRaft cluster ids: what `kafka-storage format -t <id>` accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from streamrec import localstack
from streamrec.localstack import kafka_cluster_id


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 is 111110.. in bits: its base64 digit is 62, '-' in the URL-safe alphabet, which the storage
    # tool's parser reads as an option ("argument --cluster-id/-t: expected one argument").
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(localstack.uuid, "uuid4", lambda: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    assert kafka_cluster_id() == base64.urlsafe_b64encode(b"\x10" + bytes(15)).decode().rstrip("=")


def test_ids_are_22_character_uuids_in_url_safe_base64() -> None:
    for _ in range(500):
        cid = kafka_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
