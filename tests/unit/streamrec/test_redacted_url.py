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
