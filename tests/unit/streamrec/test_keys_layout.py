"""The per-partition key layout: everything of one Kafka partition's users shares one Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from streamrec.partitioner import partition_for
from streamrec.store import Keys


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def test_a_users_keys_and_its_partitions_worker_keys_share_one_slot() -> None:
    k = Keys("shop", partitions=12)
    for user in ("u1", "alice", "ユーザー", "x" * 300, "a:b{c}d"):
        p = partition_for(user, 12)
        assert k.partition(user) == p
        keys = [k.history(user), k.history(user, p), k.user_events(p), k.profiles(p), k.user_vectors("v1", p),
                k.user_ts("v1", p), k.offsets("workers", p), k.fence("workers", p), k.dedup(17, p)]
        assert {slot(key) for key in keys} == {slot(k.tag(p))}, user


def test_partitions_spread_over_slots_and_global_keys_do_not_take_a_partitions_tag() -> None:
    k = Keys("shop", partitions=64)
    assert len({slot(k.tag(p)) for p in range(64)}) == 64
    assert all("{p" not in key for key in (k.current, k.model("v1", "items"), k.trend("1h", 5), k.item_category))


def test_per_user_version_parts_and_braces_in_the_prefix_are_refused() -> None:
    k = Keys("shop", partitions=4)
    with pytest.raises(ValueError, match="per partition"):
        k.model("v1", "users")
    with pytest.raises(ValueError, match="hash tags"):
        Keys("sh{op}", partitions=4)
    with pytest.raises(ValueError, match="at least one partition"):
        Keys("shop", partitions=0)


def test_users_group_by_their_partition_in_order() -> None:
    k = Keys("shop", partitions=5)
    users = [f"u{n}" for n in range(50)]
    groups = k.by_partition(users)
    assert sorted(u for g in groups.values() for u in g) == sorted(users)
    assert all(k.partition(u) == p and g == sorted(g, key=users.index) for p, g in groups.items() for u in g)
