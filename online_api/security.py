"""API keys: the ``X-API-Key`` header, compared in constant time against the configured keys.

Two key lists (``streamrec.settings``):

* ``STREAMREC_API_KEYS``: full access: catalogue writes, the collector, and reads when
  ``settings.api_read_keys_required``;
* ``STREAMREC_API_INGEST_KEYS``: the collector only (``POST /v1/events``, ``/v1/events:batch``). These are
  the keys a browser or an app holds, so they are public in practice: anywhere else they get a 403 that
  says what they are for.

Writes always need a key. With no keys configured, keyed endpoints refuse everything (401): the safe
default for a service that may be exposed. A missing key is 401, a wrong one 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Security
from fastapi.security import APIKeyHeader

from online_api.errors import Forbidden, Unauthorized
from streamrec.settings import Settings

HEADER = "X-API-Key"
ADMIN_SETTING = "STREAMREC_API_KEYS"
INGEST_SETTING = "STREAMREC_API_INGEST_KEYS"
_scheme = APIKeyHeader(name=HEADER, auto_error=False, description=(
    f"an API key: one from {ADMIN_SETTING} (every keyed endpoint) or from {INGEST_SETTING} (the collector only)"))

Dependency = Callable[[str | None], Awaitable[None]]


def key_matches(given: str, keys: Sequence[bytes]) -> bool:
    """True when ``given`` equals one of ``keys``; every key is compared, each in constant time."""
    raw = given.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(raw, key)
    return found


def ingest_only_keys(settings: Settings) -> list[str]:
    """The collector-only keys: ingest keys that are not also full-access keys (a key in both lists is full)."""
    admin = set(settings.api_key_list)
    return [k for k in settings.api_ingest_key_list if k not in admin]


def require_key(keys: list[str], *, setting: str = ADMIN_SETTING) -> Dependency:
    """A FastAPI dependency accepting requests that carry one of ``keys`` in ``X-API-Key``.

    ``setting`` names where the keys come from, for the 401 when none are configured.
    """
    encoded = [k.encode() for k in keys]

    async def check(given: str | None = Security(_scheme)) -> None:
        if not encoded:
            raise Unauthorized(f"this endpoint needs an API key and none is configured on the server "
                               f"(set {setting})", headers={"WWW-Authenticate": HEADER})
        if not given:
            raise Unauthorized(f"missing API key: send it in the {HEADER} header",
                               headers={"WWW-Authenticate": HEADER})
        if not key_matches(given, encoded):
            raise Forbidden("API key not accepted")

    return check


def require_collector_key(settings: Settings) -> Dependency:
    """The collector's check: a full-access key or an ingest key."""
    return require_key([*settings.api_key_list, *ingest_only_keys(settings)],
                       setting=f"{ADMIN_SETTING}, or {INGEST_SETTING} for collector-only keys")


def refuse_ingest_keys(settings: Settings, what: str) -> Dependency:
    """A dependency that answers 403 to a collector-only key, saying so; any other request passes on.

    Placed before the full-access check (``require_key(settings.api_key_list)``) of an endpoint that
    ingest keys may not use, so a holder of one learns why instead of a bare "not accepted".
    """
    encoded = [k.encode() for k in ingest_only_keys(settings)]

    async def check(given: str | None = Security(_scheme)) -> None:
        if given and encoded and key_matches(given, encoded):
            raise Forbidden(f"this API key may only post events (POST /v1/events, POST /v1/events:batch); "
                            f"{what} need a key from {ADMIN_SETTING}")

    return check
