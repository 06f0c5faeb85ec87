"""`streamrec dead-letters list|replay` on real Kafka, as an SRE runs it (its own process).

Dead letters are written by the worker's own DeadLetterProducer; the replayed event is then applied by
the worker's processing core (BatchProcessor) on real Redis, once however often it is replayed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from online_api.server import free_port
from stream_processors.dead_letters import DeadLetterProducer
from stream_processors.decode import DeadLetter
from stream_processors.processor import BatchProcessor
from streamrec.dead_letter_format import REPLAYED_FROM
from streamrec.events import Event, EventType, now_ms
from streamrec.kafka_io import Record, end_offsets, read_all
from streamrec.partitioner import partition_for
from streamrec.settings import Settings
from streamrec.store import RedisStore
from tests.helpers.processes import run_cli


def event_bytes(user: str) -> bytes:
    event = Event(event_id=uuid.uuid4(), user_id=user, item_id="new-item", type=EventType("click"), ts=now_ms())
    return event.to_json_bytes()


@pytest.fixture
def letters(make_settings: Callable[..., Settings]) -> tuple[Settings, dict[str, Record], float]:
    """Dead letters of four reasons, the last two about 1.5 s after the first two; returns the cut time."""
    s = make_settings()
    clicks, purchases = s.topic_clicks, s.topic_purchases
    ts = now_ms()
    recs = {
        # the poison event sat in its user's murmur2 partition, as every applied event does
        "apply_failed": Record(clicks, partition_for("u-poison", s.partitions), 10, b"u-poison",
                               event_bytes("u-poison"), ts),
        "bad_json": Record(purchases, 2, 5, b"u-bad", b'{"event_id": \x1b[2J\x07', ts),
        "invalid_field": Record(clicks, 0, 7, b"u-field", b'{"user_id": "\xe2\x80\xae evil"}' + b"x" * 300, ts),
        "oversized": Record(clicks, 3, 2, b"u-big", b"y" * 900_050, ts),
    }
    producer = DeadLetterProducer(s)
    details = {"apply_failed": "UnicodeEncodeError: surrogates not allowed", "bad_json": "Expecting value",
               "invalid_field": "user_id: bad \x1b[31m", "oversized": "1 MB"}
    letter = {r: DeadLetter(rec, r, details[r]) for r, rec in recs.items()}
    producer.send([letter["apply_failed"], letter["bad_json"]])
    time.sleep(0.8)
    cut = time.time()
    time.sleep(0.8)
    producer.send([letter["invalid_field"], letter["oversized"]])
    return s, recs, cut


def dl(settings: Settings, *args: str) -> tuple[int, str, str]:
    res = run_cli(settings, "dead-letters", *args)
    return res.returncode, res.stdout, res.stderr


def test_list_shows_reason_detail_source_time_and_a_safe_preview(
        letters: tuple[Settings, dict[str, Record], float]) -> None:
    s, recs, cut = letters
    rc, out, err = dl(s, "list")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["LETTER", "DEAD-LETTERED-AT", "REASON", "SOURCE", "DETAIL", "VALUE"]
    rows = {ln.split()[2]: ln for ln in lines[1:5]}
    assert set(rows) == set(recs)
    for reason, rec in recs.items():
        assert f" {rec.topic}:{rec.partition}:{rec.offset} " in rows[reason]
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out  # safe for a terminal
    assert "\\x1b[2J\\x07" in rows["bad_json"] and "\\u202e evil" in rows["invalid_field"]
    assert "UnicodeEncodeError: surrogates not allowed" in rows["apply_failed"]
    assert all(len(ln) < 400 for ln in lines)  # previews are cut (the oversized value is 900 kB)
    assert "4 of 4 dead letters" in out

    rc, out, err = dl(s, "list", "--reason", "apply_failed")
    assert rc == 0, err
    assert [ln.split()[2] for ln in out.splitlines()[1:2]] == ["apply_failed"]
    assert f"{s.topic_clicks}:{recs['apply_failed'].partition}:10" in out
    assert "1 of 1 dead letters with reason apply_failed" in out

    since = datetime.fromtimestamp(cut, UTC).isoformat()
    rc, out, err = dl(s, "list", "--since", since, "--json")
    assert rc == 0, err
    doc = json.loads(out)
    got = {x["reason"]: x for x in doc["dead_letters"]}
    assert set(got) == {"invalid_field", "oversized"} and doc["matching"] == 2
    big = got["oversized"]
    assert big["truncated_from"] == 900_050 and big["headers"]["streamrec-truncated-from"] == "900050"
    assert big["source"] == {"topic": s.topic_clicks, "partition": 3, "offset": 2}
    assert set(big["headers"]) >= {"streamrec-reason", "streamrec-detail", "streamrec-source",
                                   "streamrec-source-ts", "streamrec-dead-lettered-at"}
    assert len(big["value_preview"]) <= 121 and big["value_bytes"] == 900_000

    rc, out, _ = dl(s, "list", "--since", "1h", "--limit", "1")
    assert rc == 0 and "1 of 4 dead letters" in out


def test_replay_by_reason_reaches_the_source_topic_only_once_applied(
        letters: tuple[Settings, dict[str, Record], float]) -> None:
    s, recs, _ = letters
    before = end_offsets(s, s.event_topics)
    rc, out, err = dl(s, "replay", "--reason", "apply_failed", "--dry-run")
    assert rc == 0, err
    assert "would replay 1 dead letter to their source topics" in out
    assert end_offsets(s, s.event_topics) == before  # a dry run produces nothing

    rc, out, err = dl(s, "replay", "--reason", "apply_failed", "--since", "1h")
    assert rc == 0, err
    assert f"replayed 1 dead letter to their source topics: {s.topic_clicks} 1" in out
    arrived = list(read_all(s, s.event_topics))
    assert [(r.topic, r.partition, r.key, r.value) for r in arrived] == [
        (s.topic_clicks, recs["apply_failed"].partition, b"u-poison", recs["apply_failed"].value)]
    assert dict(arrived[0].headers)[REPLAYED_FROM].decode().startswith(f"{s.topic_dead_letter}:")

    # Replayed again (an SRE's second try): the worker's core applies the event once.
    rc, out, err = dl(s, "replay", "--reason", "apply_failed")
    assert rc == 0, err
    again = list(read_all(s, s.event_topics))
    assert len(again) == 2 and again[0].value == again[1].value
    store = RedisStore(s)
    try:
        result = BatchProcessor(s, store, dead_letters=None).process(again)
    finally:
        store.close()
    assert (result.applied, result.duplicates) == (1, 1)


def test_replay_refuses_truncated_letters_and_unknown_offsets(
        letters: tuple[Settings, dict[str, Record], float]) -> None:
    s, _, _ = letters
    doc = json.loads(dl(s, "list", "--json")[1])
    where = {x["reason"]: x["letter"] for x in doc["dead_letters"]}
    rc, out, err = dl(s, "replay", "--offsets", f"{where['oversized']},{where['bad_json']}")
    assert rc == 1
    assert "truncated" in err and "900,050" in err
    assert f"replayed 1 dead letter to their source topics: {s.topic_purchases} 1" in out
    assert sum(end_offsets(s, [s.topic_clicks]).values()) == 0  # the truncated one was not sent

    rc, _, err = dl(s, "replay", "--offsets", "0:999")
    assert rc == 1 and "no dead letter at 0:999" in err


def test_kafka_unreachable_is_one_line_and_exit_1(make_settings: Callable[..., Settings]) -> None:
    down = make_settings().model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    for args in (["list"], ["replay", "--reason", "apply_failed"]):
        rc, out, err = dl(down, *args, "--timeout", "2")
        assert rc == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("streamrec: kafka at 127.0.0.1:"), err
