"""API keys: the ``X-API-Key`` header, compared in constant time against the configured keys.

Two key lists (``streamrec.settings``):

* ``STREAMREC_API_KEYS``: full access: catalogue writes, the collector, and reads when
  ``settings.api_read_keys_required``;
* ``STREAMREC_API_INGEST_KEYS``: the collector only (``POST /v1/events``, ``/v1/events:batch``). These are
  the keys a browser or an app holds, so they are public in practice: anywhere else they get a 403 that
  says what they are for.

Writes always need a key. With no keys configured, keyed endpoints refuse everything (401): the safe
default for a service that may be exposed. A missing key is 401, a wrong one 403.

The API refuses to start with a guessable full-access key (:func:`check_key_strength`): a well-known
default or placeholder (``change-me``, ``secret``, ``admin``...), fewer than 16 characters, or fewer than
5 distinct characters. Collector-only keys are public by design and are not checked.
"""

from __future__ import annotations

import hmac
import re
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

MIN_KEY_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 5
# Defaults and placeholders seen in configuration files, compared in lower case without punctuation; also
# refused repeated or with digits around them ("changemechangeme", "password123"), and counting digits.
WELL_KNOWN_KEYS = frozenset({
    "changeme", "changeit", "replaceme", "secret", "secretkey", "mysecret", "password", "passw0rd", "admin",
    "administrator", "root", "guest", "test", "testing", "demo", "dev", "devkey", "default", "example",
    "sample", "key", "apikey", "yourapikey", "token", "letmein", "qwerty",
})
_WELL_KNOWN = re.compile(r"\d*(?:" + "|".join(sorted(WELL_KNOWN_KEYS, key=len, reverse=True)) + r")+\d*")
_COUNTING = ("1234567890" * 10, "0123456789" * 10)


class WeakApiKey(ValueError):
    """A configured full-access key is guessable: the API refuses to start with it."""


def key_weakness(key: str) -> str | None:
    """Why ``key`` is too weak for full access (well-known, short, or repetitive), or None."""
    plain = re.sub(r"[^a-z0-9]", "", key.lower())
    if _WELL_KNOWN.fullmatch(plain) or (plain.isdigit() and any(c.startswith(plain) for c in _COUNTING)):
        return "a well-known default or placeholder"
    if len(key) < MIN_KEY_LENGTH:
        return f"shorter than {MIN_KEY_LENGTH} characters"
    if len(set(key)) < MIN_DISTINCT_CHARACTERS:
        return f"made of fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    return None


def check_key_strength(settings: Settings) -> None:
    """Raise :class:`WeakApiKey` when a key of ``STREAMREC_API_KEYS`` is guessable; the message never shows it."""
    keys = settings.api_key_list
    problems = [f"key {i} of {len(keys)} is {why}" for i, key in enumerate(keys, 1)
                if (why := key_weakness(key)) is not None]
    if problems:
        raise WeakApiKey(f"{ADMIN_SETTING}: {'; '.join(problems)}. The API does not start with a guessable "
                         f"full-access key: use random ones, e.g. `openssl rand -hex 24`")


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
