"""The API process helper says why an API did not come up: its exit code and the end of its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from online_api.server import ApiProcess
from streamrec.settings import Settings


def test_an_api_that_exits_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    api = ApiProcess(Settings(), log_level="not-a-level", log_path=log)  # the CLI refuses this and exits
    try:
        with pytest.raises(RuntimeError, match="the API exited with code 2; its log ends:") as err:
            api.start(timeout_s=60)
        assert "not-a-level" in str(err.value)  # the argument parser's complaint, quoted from the log
    finally:
        api.stop()
