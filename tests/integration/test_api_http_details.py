"""HTTP details through a real `streamrec api` process (uvicorn) on real Redis and Kafka: ``Retry-After`` on
a not-ready ``/readyz``, HEAD on GET routes (the fast lane's included) with the GET's headers and no body
on a keep-alive connection, no redirect built from the client's ``Host``, and unparsable bodies as 422.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from online_api.server import ApiProcess
from ops.bench_stream import publish_model
from streamrec.settings import Settings

KEY = "http-details-key-0123456789"


def read_answer(sock: socket.socket, buffer: bytes, *, head: bool) -> tuple[int, dict[str, str], bytes, bytes]:
    """One answer off ``sock``: status, headers, body (none for HEAD), and the bytes after it."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65_536)
        assert chunk, f"connection closed; got {buffer!r}"
        buffer += chunk
    raw_head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = 0 if head else int(headers["content-length"])
    while len(rest) < length:
        rest += sock.recv(65_536)
    return int(status_line.split(" ")[1]), headers, rest[:length], rest[length:]


def test_http_details_on_the_real_server(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings(api_keys=KEY, als_factors=8)
    log = tmp_path / "api.log"
    with ApiProcess(s, log_path=log) as api, httpx.Client(base_url=api.url, timeout=10) as http:
        for method in ("GET", "HEAD"):  # no model yet: not ready, and when to ask again
            resp = http.request(method, "/readyz")
            assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1, (method, resp.headers)

        publish_model(s, 50, s.als_factors, seed=3)
        api.wait_for("/readyz")
        paths = ["/v1/users/u-1/recommendations?k=5",  # the fast lane
                 "/v1/users/u-1/recommendations?k=05",  # the FastAPI route
                 "/v1/trending", "/healthz", "/readyz", "/store"]
        expected = {p: http.get(p) for p in paths}
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
            rest = b""
            for path in paths:  # keep-alive: a HEAD answer with a body would garble the next answer
                for method in ("HEAD", "GET"):
                    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                    status, headers, body, rest = read_answer(sock, rest, head=method == "HEAD")
                    want = expected[path]
                    assert status == want.status_code == 200, (method, path, status)
                    assert headers["content-type"] == want.headers["content-type"], (method, path)
                    if method == "HEAD":
                        assert int(headers["content-length"]) == len(want.content) > 0, (path, headers)
                    else:
                        assert body and len(body) == int(headers["content-length"]), path
            assert rest == b""

        for path in ("/v1/trending/", "/healthz/"):
            resp = http.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
            assert resp.status_code == 404 and "location" not in resp.headers, (path, resp.headers)
            assert resp.json()["error"]["code"] == "not_found"

        deep = b"[" * 10_000 + b"]" * 10_000
        for method, path in (("POST", "/v1/events"), ("PUT", "/v1/items/i1")):
            resp = http.request(method, path, content=deep, headers={"X-API-Key": KEY,
                                                                     "Content-Type": "application/json"})
            assert resp.status_code == 422, (path, resp.text)
            assert resp.json()["error"]["fields"] == [{"field": "body", "message": "invalid JSON: nested too deeply"}]
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "unexpected error" not in text, text[-3000:]
