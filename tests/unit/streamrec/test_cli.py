"""Each subcommand explains itself with --help."""

from __future__ import annotations

import pytest

from streamrec.cli import _load_plugins, build_parser, main

_load_plugins()
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_says_what_it_does(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"streamrec {name}" in out and len(out.splitlines()) > 3


def test_foundation_commands_exist() -> None:
    assert {"stack", "simulate"} <= set(SUBCOMMANDS)
