"""The reliability suite's figures: each scenario adds one entry to ``test-results/reliability.json``.

``make reliability`` removes the file first, runs every scenario, then renders ``docs/reliability.md`` from
it (:mod:`tests.reliability.report`), so the document always holds the figures of one run. Entries are
merged under a file lock, so scenarios may record from any process.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from streamrec.settings import REPO_ROOT

RESULTS = Path(os.environ.get("STREAMREC_RELIABILITY_RESULTS", REPO_ROOT / "test-results" / "reliability.json"))


def _update(change: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = {}
        if RESULTS.exists():
            try:
                data = json.loads(RESULTS.read_text())
            except ValueError:
                data = {}
        data.setdefault("run", {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                         "system": platform.platform()}})
        data.setdefault("scenarios", {})
        data.setdefault("tests", {})
        change(data)
        data["run"]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, RESULTS)


def record(scenario: str, figures: dict[str, Any]) -> None:
    """Store ``figures`` (JSON-able) for ``scenario``, replacing an earlier entry of the same name."""
    entry = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"\n[reliability] {scenario}: {json.dumps(entry, sort_keys=True)[:2000]}", flush=True)
    _update(lambda data: data["scenarios"].__setitem__(scenario, entry))


def record_test(nodeid: str, outcome: str, seconds: float) -> None:
    """Store a test's outcome (the pytest plugin calls this for every test of the run)."""
    _update(lambda data: data["tests"].__setitem__(nodeid, {"outcome": outcome, "seconds": round(seconds, 1)}))
