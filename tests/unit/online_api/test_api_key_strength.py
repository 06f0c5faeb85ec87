"""The API refuses to start with a guessable full-access key (STREAMREC_API_KEYS), and says why in one line
without showing the key; no key at all still starts (writes then answer 401)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from online_api.app import create_app
from online_api.security import WeakApiKey
from online_api.server import free_port
from streamrec.settings import Settings

CLOSED = {"redis_url": "redis://127.0.0.1:1/0", "kafka_bootstrap": "127.0.0.1:1"}


def build(**overrides: str) -> TestClient:
    return TestClient(create_app(Settings(**{**CLOSED, **overrides}), background=False),  # type: ignore[arg-type]
                      raise_server_exceptions=False)


@pytest.mark.parametrize(("key", "why"), [
    *[(k, "well-known") for k in ("change-me", "changeme", "CHANGE_ME", "secret", "password", "admin", "test",
                                  "demo", "123456", "changemechangeme", "password-1234567890", "1234567890123456")],
    ("k3y-9f2a", "shorter than 16 characters"),
    ("abababababababababab", "fewer than 5 distinct characters"),
])
def test_weak_full_access_keys_are_refused(key: str, why: str) -> None:
    strong = secrets.token_hex(16)
    with pytest.raises(WeakApiKey) as refused:
        build(api_keys=f"{strong},{key}")
    message = str(refused.value)
    assert "STREAMREC_API_KEYS" in message and "key 2 of 2" in message and why in message
    assert key not in message and strong not in message


@pytest.mark.parametrize("key", [secrets.token_hex(8), secrets.token_urlsafe(24), "svc-recs-prod-7f3e9a1c2b"])
def test_random_keys_start_and_are_accepted(key: str) -> None:
    c = build(api_keys=key)
    resp = c.put("/v1/items/i1", json={"category": "c"}, headers={"X-API-Key": key})
    assert resp.status_code == 503  # past the key check: the store is down here


def test_no_key_still_starts_and_refuses_writes() -> None:
    resp = build(api_keys="").put("/v1/items/i1", json={"category": "c"}, headers={"X-API-Key": "change-me"})
    assert resp.status_code == 401 and "STREAMREC_API_KEYS" in resp.json()["error"]["message"]


def test_collector_only_keys_are_public_by_design_and_not_checked() -> None:
    resp = build(api_ingest_keys="demo").post("/v1/events", json={}, headers={"X-API-Key": "demo"})
    assert resp.status_code == 422  # past the key check: the body is invalid


def test_streamrec_api_exits_with_one_line_before_serving() -> None:
    env = {**os.environ, **{f"STREAMREC_{k.upper()}": v for k, v in CLOSED.items()},
           "STREAMREC_API_KEYS": "change-me"}
    done = subprocess.run([sys.executable, "-m", "ops.cli", "api", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamrec: api: STREAMREC_API_KEYS: key 1 of 1 is a well-known"), \
        done.stderr
    assert "change-me" not in done.stderr and "Traceback" not in done.stderr
