"""Pins on third-party internals that the project overrides or copies: a hash of each upstream source.

An override of a private method (or a copy of one, adjusted) is only right for the upstream code it was
written against. :func:`check` hashes ``inspect.getsource`` of each pinned upstream function and fails
with what to re-check when one changed (or disappeared, so that the override would never run). After
re-checking (and adjusting) the override, record the new hash printed in the failure.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Pin:
    """``target`` (``module:Class.method``) had source hash ``sha256`` in ``dist`` ``version``."""

    target: str
    sha256: str
    recheck: str  # what of ours depends on it
    dist: str
    version: str


def source_hash(target: str) -> str:
    """The SHA-256 of ``inspect.getsource`` of ``module:Qualified.name``."""
    module, _, qualname = target.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()  # type: ignore[arg-type]


def check(pin: Pin) -> None:
    """Fail, naming what to re-check, when the pinned upstream source is not the recorded one."""
    name = pin.target.replace(":", ".")
    installed = importlib.metadata.version(pin.dist)
    try:
        digest = source_hash(pin.target)
    except AttributeError:
        raise AssertionError(f"{name} no longer exists upstream ({pin.dist} {installed}; recorded with "
                             f"{pin.version}): {pin.recheck} would never run; re-check it") from None
    assert digest == pin.sha256, (
        f"{name} changed upstream ({pin.dist} {installed}; recorded with {pin.version}): re-check "
        f"{pin.recheck}, then record the new hash {digest}")
