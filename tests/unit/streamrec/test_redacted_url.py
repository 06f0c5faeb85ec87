"""Redis URLs are shown with the password masked (start-up lines, `streamrec config --effective`, the demo)."""

from __future__ import annotations

import pytest

from streamrec.store import redacted_url


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:16379/0", "redis://127.0.0.1:16379/0"),
    ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://default:p@ss:w0rd@host:6380", "rediss://default:***@host:6380"),
    ("redis://user@host:6379", "redis://user@host:6379"),
    ("unix:///run/redis.sock", "unix:///run/redis.sock"),
])
def test_passwords_are_masked(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_effective_config_hides_every_key_and_the_redis_password(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import json

    from ops.cli import cmd_config
    from streamrec.settings import Settings

    s = Settings(api_keys="adm1n-k3y", api_ingest_keys="ing3st-k3y", storefront_ingest_key="ing3st-k3y",
                 redis_url="redis://:s3cret@127.0.0.1:6379/0")
    assert cmd_config(argparse.Namespace(write=False, effective=True), s) == 0
    shown = capsys.readouterr().out
    assert not [secret for secret in ("adm1n-k3y", "ing3st-k3y", "s3cret") if secret in shown]
    values = json.loads(shown)
    assert values["api_keys"] == values["api_ingest_keys"] == values["storefront_ingest_key"] == "***"
