"""`streamrec bench publish` on real Redis: both publish paths run, store the same bytes, and leave no keys."""

from __future__ import annotations

import json

import pytest

from ops import cli
from ops.bench_publish import BenchConfig, run
from streamrec.settings import Settings
from streamrec.store import RedisStore


def test_both_paths_are_timed_on_the_same_vectors_and_cleaned_up(settings: Settings) -> None:
    result = run(settings, BenchConfig(users=3_000, factors=8, repeat=2))  # checks both hashes' bytes itself
    assert result["users"] == 3_000 and result["repeat"] == 2
    assert result["redis_py_s"] > 0 and result["resp_s"] > 0
    assert result["ratio"] > 0 and result["best_ratio"] > 0
    store = RedisStore(settings)
    try:
        assert not list(store.client.scan_iter(f"{settings.redis_prefix}:bench-publish-*", count=1000))
    finally:
        store.close()


def test_the_command_prints_the_figures(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in settings.model_dump(exclude_none=True).items():
        monkeypatch.setenv(f"STREAMREC_{name.upper()}", str(value))
    assert cli.main(["bench", "publish", "--json", "--users", "2000", "--factors", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr()
    assert set(json.loads(out.out.strip().splitlines()[-1])) >= {"users", "factors", "redis_py_s", "resp_s", "ratio"}
    assert "rule 1.5x" in out.err
