"""Renders docs/configuration.md from the Settings class, so the documentation cannot drift."""

from __future__ import annotations

from pydantic.fields import FieldInfo

from streamrec.settings import REPO_ROOT, Settings

HEADER = """# Configuration

Every process reads its settings once at start-up from environment variables with the `STREAMREC_`
prefix (one pydantic-settings class, `streamrec/settings.py`), then passes them down. For example
`STREAMREC_KAFKA_BOOTSTRAP=broker:9092 streamrec worker`. This page is generated from that class
(`streamrec config --write`); a unit test keeps it in sync.

| variable | default | meaning |
|---|---|---|
"""


def _default(name: str, info: FieldInfo) -> str:
    if name in ("stack_dir",):
        return "`<repo>/.stack`"
    value = info.get_default(call_default_factory=True)
    return "(unset)" if value in (None, "") else f"`{value}`"


def render() -> str:
    """The markdown table of every setting."""
    rows = []
    for name, info in Settings.model_fields.items():
        desc = (info.description or "").replace("|", "\\|")
        rows.append(f"| `STREAMREC_{name.upper()}` | {_default(name, info)} | {desc} |")
    return HEADER + "\n".join(rows) + "\n"


def write() -> None:
    """Write docs/configuration.md."""
    (REPO_ROOT / "docs" / "configuration.md").write_text(render())
