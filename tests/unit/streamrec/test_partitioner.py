"""streamrec.partitioner against the Java client's own vectors and kafka-python's partitions."""

from __future__ import annotations

import pytest

from streamrec.partitioner import KAFKA_PARTITIONER, murmur2, partition_for, to_positive

# org.apache.kafka.common.utils.UtilsTest.testMurmur2 (the Java client), and hashes of short keys
# published by projects that checked them against Utils.murmur2 (akka's Murmur2Spec).
JAVA_HASHES = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"1", -1993445489),
    (b"12", 126087238),
    (b"123", -267702483),
    (b"1234", -1614185708),
    (b"12345", -1188365604),
]

# kafka-python's test_murmur2_java_compatibility: partitions of 1000 from Kafka's Java partitioner.
JAVA_PARTITIONS_OF_1000 = [
    (b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742),
]


@pytest.mark.parametrize(("key", "expected"), JAVA_HASHES)
def test_murmur2_equals_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), JAVA_PARTITIONS_OF_1000)
def test_partition_equals_the_java_partitioner(key: bytes, expected: int) -> None:
    assert partition_for(key, 1000) == expected


def test_a_str_key_is_its_utf8_bytes() -> None:
    for user in ("u-1", "ünïcødé-user", "用户-42", "x" * 128):
        assert partition_for(user, 8) == partition_for(user.encode(), 8)


def test_every_byte_value_and_tail_length_hashes_to_a_signed_int() -> None:
    for n in range(0, 12):
        for b in (0x00, 0x7F, 0x80, 0xFF):
            h = murmur2(bytes([b]) * n)
            assert -(2**31) <= h < 2**31


def test_to_positive_clears_the_sign_bit() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


def test_partitions_are_in_range_and_spread() -> None:
    counts = [0] * 8
    for i in range(8_000):
        p = partition_for(f"user-{i}", 8)
        assert 0 <= p < 8
        counts[p] += 1
    assert min(counts) > 800  # about 1000 each


def test_one_partition_and_a_bad_count() -> None:
    assert partition_for("anyone", 1) == 0
    with pytest.raises(ValueError, match="at least one partition"):
        partition_for("anyone", 0)


def test_the_partitioner_named_for_librdkafka_is_murmur2() -> None:
    assert KAFKA_PARTITIONER == "murmur2_random"


def test_every_producer_config_uses_the_murmur2_partitioner() -> None:
    from streamrec.kafka_io import EventProducer, producer_config
    from streamrec.settings import Settings

    s = Settings(kafka_bootstrap="127.0.0.1:1")
    assert producer_config(s, **{"linger.ms": 50})["partitioner"] == "murmur2_random"
    assert EventProducer(s, **{"linger.ms": 0})._conf["partitioner"] == "murmur2_random"
