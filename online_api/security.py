"""API keys: the ``X-API-Key`` header, compared in constant time against ``settings.api_key_list``.

Writes (the collector and catalogue) always need a key; reads need one when
``settings.api_read_keys_required``. With no keys configured, keyed endpoints refuse everything (401):
the safe default for a service that may be exposed. A missing key is 401, a wrong one 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Security
from fastapi.security import APIKeyHeader

from online_api.errors import Forbidden, Unauthorized

HEADER = "X-API-Key"
_scheme = APIKeyHeader(name=HEADER, auto_error=False, description="an API key from STREAMREC_API_KEYS")


def key_matches(given: str, keys: list[bytes]) -> bool:
    """True when ``given`` equals one of ``keys``; every key is compared, each in constant time."""
    raw = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(raw, key)
    return found


def require_key(keys: list[str]) -> Callable[[str | None], Awaitable[None]]:
    """A FastAPI dependency accepting requests that carry one of ``keys`` in ``X-API-Key``."""
    encoded = [k.encode() for k in keys]

    async def check(given: str | None = Security(_scheme)) -> None:
        if not encoded:
            raise Unauthorized("this endpoint needs an API key and none is configured on the server "
                               "(set STREAMREC_API_KEYS)", headers={"WWW-Authenticate": HEADER})
        if not given:
            raise Unauthorized(f"missing API key: send it in the {HEADER} header",
                               headers={"WWW-Authenticate": HEADER})
        if not key_matches(given, encoded):
            raise Forbidden("API key not accepted")

    return check
