"""The bound on every Redis call of the request path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from online_api.errors import Unavailable

REDIS_TIMEOUT_S = 1.0


@contextlib.asynccontextmanager
async def redis_deadline() -> AsyncIterator[None]:
    """Bound a Redis call on the hot path; a slow or hung Redis becomes a 503, never a hung request."""
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            yield
    except TimeoutError:
        raise Unavailable("the store did not answer in time; retry shortly") from None
