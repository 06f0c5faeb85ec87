"""A pytest plugin recording every test's outcome in the reliability results (``pytest -p tests.reliability.plugin``).

``make reliability`` loads it so docs/reliability.md lists each test of the run and its outcome, including
the hostile-input tests that live under tests/unit and tests/integration (they also run in ``make test``).
"""

from __future__ import annotations

import pytest

from tests.reliability.record import record_test


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "skipped" if report.skipped else report.outcome
        record_test(report.nodeid, outcome, report.duration)
