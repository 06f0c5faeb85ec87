"""Security: API keys on every write, loopback-only listening sockets, and no secret in logs or responses.

1. ``streamrec api`` (the real CLI, default host) and ``streamrec worker`` on the shared stack: the
   collector (``POST /v1/events``, ``/v1/events:batch``) and catalogue writes (``PUT /v1/items/{id}``) answer
   401 without a key and 403 with a wrong one; with ``STREAMREC_API_READ_KEYS_REQUIRED`` reads do too.
   Every TCP socket the API, the worker, Kafka and Redis listen on is bound to loopback.
2. On a private stack whose Redis requires a password: the worker and the API run with the password in
   ``STREAMREC_REDIS_URL`` and the keys in ``STREAMREC_API_KEYS``; neither the keys nor the password
   appear in any response, any log, or ``streamrec config --effective``.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_security.py -v``
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from online_api.server import ApiProcess, free_port
from ops.bench_stream import publish_model
from streamrec.events import now_ms
from streamrec.settings import Settings
from streamrec.stack_processes import read_pid
from streamrec.store import RedisStore
from streamrec.store.users import event_counts
from tests.helpers.processes import ChildProcess, Worker, run_cli
from tests.reliability.procs import PrivateStack, is_loopback, listening_sockets
from tests.reliability.record import record


def event(user: str = "sec-user") -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": user, "item_id": "i1", "type": "click", "ts": now_ms()}


def start_cli_api(s: Settings, log: Path, port: int, *extra: str) -> ChildProcess:
    """``streamrec api`` exactly as an operator runs it (no --host: the default bind address)."""
    return ChildProcess(s, "api", "--port", str(port), "--log-level", "debug", "--access-log", *extra, log_path=log)


def key_matrix(url: str, key: str) -> dict[str, dict[str, int]]:
    """Status of every write endpoint without a key, with wrong keys, and with the right one."""
    wrong = {"none": None, "empty": "", "wrong": "not-the-key", "prefix": key[:-1], "longer": key + "x",
             "upper": key.upper(), "right": key}
    out: dict[str, dict[str, int]] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for name, value in wrong.items():
            headers = {} if value is None else {"X-API-Key": value}
            out[name] = {
                "POST /v1/events": http.post("/v1/events", json=event(), headers=headers).status_code,
                "POST /v1/events:batch": http.post("/v1/events:batch", json={"events": [event()]},
                                                   headers=headers).status_code,
                "PUT /v1/items/{id}": http.put("/v1/items/sec-item", json={"category": "c"},
                                               headers=headers).status_code,
            }
    return out


def test_keys_are_required_and_every_server_listens_on_loopback_only(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    key = f"k-{secrets.token_hex(12)}"
    s = make_settings(api_keys=f"{key},k-second-{secrets.token_hex(4)}", als_factors=8)
    publish_model(s, 100, 8, seed=2)
    port = free_port()
    api = start_cli_api(s, tmp_path / "api.log", port)
    worker = Worker(s, tmp_path, "worker")
    keyed_reads = ApiProcess(s.model_copy(update={"api_read_keys_required": True}), log_path=tmp_path / "api2.log")
    try:
        url = f"http://127.0.0.1:{port}"
        api.wait_until(lambda: _answers(url + "/healthz"), 60, "streamrec api")
        worker.metrics_url()
        keyed_reads.start()
        matrix = key_matrix(url, key)
        with httpx.Client(base_url=keyed_reads.url, timeout=30) as http:
            reads = {"none": http.get("/v1/trending").status_code,
                     "wrong": http.get("/v1/trending", headers={"X-API-Key": "nope"}).status_code,
                     "right": http.get("/v1/trending", headers={"X-API-Key": key}).status_code}
        stack = Settings()
        pids = {"api": api.pid, "worker": worker.pid,
                "kafka": read_pid(Path(stack.stack_dir) / "kafka" / "kafka.pid"),
                "redis": read_pid(Path(stack.stack_dir) / "redis" / "redis.pid")}
        sockets = {name: [f"{a}:{p}" for a, p in listening_sockets(pid)] for name, pid in pids.items() if pid}
        record("security_keys_and_binding", {
            "command": "pytest -m reliability tests/reliability/test_security.py", "write_endpoints": matrix,
            "reads_with_keys_required": reads, "listening_sockets": sockets})
        for name, codes in matrix.items():
            want = {"none": 401, "empty": 401, "right": None}.get(name, 403)
            for endpoint, code in codes.items():
                if want is None:
                    assert code in (200, 202), (endpoint, code)
                else:
                    assert code == want, (name, endpoint, code)
        assert reads == {"none": 401, "wrong": 403, "right": 200}, reads
        assert set(sockets) == {"api", "worker", "kafka", "redis"} and all(sockets.values()), sockets
        for name, bound in sockets.items():
            assert all(is_loopback(b.rsplit(":", 1)[0]) for b in bound), (name, bound)
    finally:
        api.stop()
        worker.stop()
        keyed_reads.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_no_secret_in_logs_or_responses(private_stack: PrivateStack, on_private: Callable[..., Settings],
                                        tmp_path: Path) -> None:
    password = f"pw-{secrets.token_hex(12)}"
    keys = [f"k-{secrets.token_hex(12)}", f"k-{secrets.token_hex(12)}"]
    admin = RedisStore(private_stack.settings)
    admin.client.config_set("requirepass", password)
    base = private_stack.settings
    url = f"redis://:{password}@127.0.0.1:{base.redis_port}/0"
    s = on_private(redis_url=url, api_keys=",".join(keys), als_factors=8, worker_batch_within_s=0.1)
    port = free_port()
    api: ChildProcess | None = None
    worker: Worker | None = None
    store = RedisStore(s)
    responses: list[str] = []
    try:
        publish_model(s, 100, 8, seed=2)
        api = start_cli_api(s, tmp_path / "api.log", port)
        worker = Worker(s, tmp_path, "worker", log_level="debug")
        api_url = f"http://127.0.0.1:{port}"
        api.wait_until(lambda: _answers(api_url + "/readyz"), 60, "streamrec api ready")
        with httpx.Client(base_url=api_url, timeout=30) as http:
            calls = [("GET", "/", None, None), ("GET", "/docs", None, None), ("GET", "/openapi.json", None, None),
                     ("GET", "/metrics", None, None), ("GET", "/readyz", None, None),
                     ("GET", "/storefront/config.json", None, None), ("GET", "/v1/trending", None, None),
                     ("GET", "/v1/users/sec-user/recommendations", None, None),
                     ("POST", "/v1/events", event(), keys[0]), ("POST", "/v1/events", event(), keys[1]),
                     ("POST", "/v1/events", event(), keys[0][:-1]), ("POST", "/v1/events", event(), None),
                     ("PUT", "/v1/items/i1", {"category": "c"}, keys[1]), ("PUT", "/v1/items/i1", {}, "wrong"),
                     ("POST", "/v1/events", {"bad": True}, keys[0])]
            for method, path, body, key in calls:
                resp = http.request(method, path, json=body, headers={"X-API-Key": key} if key is not None else {})
                assert resp.status_code < 500, (method, path, resp.status_code)
                responses.append(f"{resp.status_code} {resp.headers} {resp.text}")
        worker.wait_applied(store, 60)
        applied = event_counts(store, ["sec-user"])["sec-user"]
        time.sleep(1.0)  # let the logs flush
        config = run_cli(s, "config", "--effective").stdout
        texts = {"responses": "\n".join(responses), "api log": (tmp_path / "api.log").read_text(errors="replace"),
                 "worker log": worker.log_path.read_text(errors="replace"), "config --effective": config}
        leaks = {where: [name for name, secret in (("api key 1", keys[0]), ("api key 2", keys[1]),
                                                   ("redis password", password)) if secret in text]
                 for where, text in texts.items()}
        record("security_secrets", {
            "command": "pytest -m reliability tests/reliability/test_security.py",
            "responses_checked": len(responses), "log_bytes_checked": {k: len(v) for k, v in texts.items()},
            "leaks": leaks, "events_applied_with_password_redis": applied})
        assert applied == 2, worker.tail()
        assert not any(leaks.values()), leaks
    finally:
        if api is not None:
            api.stop()
        if worker is not None:
            worker.stop()
        store.close()
        admin.client.config_set("requirepass", "")
        admin.close()
