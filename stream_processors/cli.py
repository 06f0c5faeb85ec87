"""`streamrec` subcommands of this stage."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this stage's subcommands to the CLI."""
