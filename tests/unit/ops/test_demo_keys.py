"""`streamrec demo` gives the storefront page a collector-only key, never a full-access one, and refuses a
guessable full-access key before it starts anything."""

from __future__ import annotations

import pytest

from ops import demo
from ops.demo import DemoError, ingest_env
from streamrec.settings import Settings


def test_a_fresh_demo_key_is_collector_only() -> None:
    env = ingest_env(Settings(api_keys="admin", api_ingest_keys="app-key"))
    key = env["STREAMREC_STOREFRONT_INGEST_KEY"]
    assert key.startswith("demo-")
    assert env["STREAMREC_API_INGEST_KEYS"].split(",") == ["app-key", key]
    assert "STREAMREC_API_KEYS" not in env  # full-access keys stay as configured, without the page's key


def test_a_configured_storefront_key_is_added_once() -> None:
    env = ingest_env(Settings(storefront_ingest_key="shop", api_ingest_keys="shop"))
    assert env == {"STREAMREC_API_INGEST_KEYS": "shop", "STREAMREC_STOREFRONT_INGEST_KEY": "shop"}
    env = ingest_env(Settings(storefront_ingest_key="shop"))
    assert env["STREAMREC_API_INGEST_KEYS"] == "shop"


def test_a_full_access_storefront_key_is_refused() -> None:
    with pytest.raises(DemoError, match="full-access key"):
        ingest_env(Settings(storefront_ingest_key="admin", api_keys="admin,other"))


def test_a_guessable_full_access_key_stops_the_demo_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_stack(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo started the stack")

    monkeypatch.setattr(demo, "LocalStack", no_stack)
    assert demo.run(Settings(api_keys="change-me")) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamrec demo: STREAMREC_API_KEYS: key 1 of 1 is a well-known") and "change-me" not in err
