"""online_api/http.py overrides uvicorn's httptools protocol: the upstream code it relies on, pinned by hash.

pyproject.toml bounds uvicorn below the next minor; within it, a patch release that touches one of these
still fails here, naming what to re-check.
"""

from __future__ import annotations

import pytest

from tests.helpers.upstream import Pin, check

PINS = [
    Pin("uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.connection_made",
        "6efb565ff3d36b916c29bd42330a2b99b601b48932389e396e5ac53dbef6b91c",
        "online_api/http.CoalescingHttpToolsProtocol.connection_made (hands uvicorn a wrapped transport)",
        "uvicorn", "0.54.0"),
    Pin("uvicorn.protocols.http.httptools_impl:RequestResponseCycle.send",
        "abdd8601b326a8da972436918d3a954e1ef39c6bf0cd9e1c1954c2e798d0bb9c",
        "online_api/http._CoalescingTransport (pairs the status line and headers write with the body write; "
        "relies on how send() writes and closes)", "uvicorn", "0.54.0"),
]


@pytest.mark.parametrize("pin", PINS, ids=[p.target for p in PINS])
def test_patched_uvicorn_internals_are_unchanged_upstream(pin: Pin) -> None:
    check(pin)
