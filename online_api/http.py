"""uvicorn's httptools protocol, handing each response to the socket in one write.

uvicorn writes the status line and headers as soon as the app starts a response, and the body when the
app sends it: two ``send()`` system calls, and two TCP segments that wake the client twice, for every
small JSON answer. :class:`CoalescingHttpToolsProtocol` gives uvicorn's protocol a transport that pairs
writes: the first is held, the next one goes out together with it at once (the body with its headers, in
the same event-loop step), and a held write that nothing follows (a HEAD answer, the last piece of a
stream) goes out from a callback scheduled when it was held. Closing flushes first. Order is kept, and an
answer never waits behind other requests' work. Everything else (parsing, flow control, keep-alive,
timeouts) is uvicorn's, on the real transport.

Selected with ``uvicorn.run(..., http="online_api.http:CoalescingHttpToolsProtocol")`` (online_api.cli).
The uvicorn code this relies on is pinned by a hash of its source (tests/unit/online_api/
test_api_http_upstream.py) and uvicorn by an upper bound (pyproject.toml): an upgrade that changes it
fails that test, naming what to re-check here.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Delegates to ``transport``; pairs of ``write`` calls become one write (see the module docstring)."""

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if len(self._buffer) > 1:
            self._flush()
        else:
            self._loop.call_soon(self._flush)  # if no second write comes in this step

    def _flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
            self._buffer.clear()
            if not self._transport.is_closing():  # the connection went away meanwhile: nothing to send to
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`_CoalescingTransport` (see the module docstring)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn
        super().connection_made(cast(asyncio.Transport, _CoalescingTransport(transport, self.loop)))
