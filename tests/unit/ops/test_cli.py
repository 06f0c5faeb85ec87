"""Each subcommand explains itself with --help."""

from __future__ import annotations

import pytest

from ops.cli import build_parser, main

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


def test_configuration_doc_lists_every_setting() -> None:
    from ops import config_doc
    from streamrec.settings import REPO_ROOT, Settings

    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert text == config_doc.render(), "run: streamrec config --write"
    for name, info in Settings.model_fields.items():
        assert f"`STREAMREC_{name.upper()}`" in text
        assert info.description, f"setting {name} needs a description"
