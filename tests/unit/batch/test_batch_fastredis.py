"""The fast RESP serialiser emits exactly what redis-py's own does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import Encoder, PythonRespSerializer

from batch.fastredis import FastPacker

stock = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
fast = FastPacker()
args = st.one_of(st.binary(max_size=7000), st.text(max_size=300), st.integers(), st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["HSET", "SET", "CONFIG GET", b"HSET", b"CLIENT SETNAME"]), st.lists(args, max_size=12))
def test_same_bytes_as_redis_py(command: str | bytes, rest: list[object]) -> None:
    assert b"".join(fast.pack(command, *rest)) == b"".join(stock.pack(command, *rest))


def test_vectors_and_unicode_keys() -> None:
    cmd = ("HSET", "p:model:v1:users", "ünï", b"\x00\x01" * 128, "u2", bytes(256))
    assert fast.pack(*cmd) == [b"".join(stock.pack(*cmd))]
