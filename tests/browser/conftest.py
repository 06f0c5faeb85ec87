"""The whole chain for browser tests: real Kafka and Redis, a published model, a worker process, the API
(serving the storefront) and Debian's Chromium driven by Playwright.

Kafka and Redis come from the integration fixtures (``endpoints``, ``make_settings``: own topics, consumer
group and Redis prefix per test). Chromium is ``/usr/bin/chromium`` from Debian (scripts/bootstrap.sh
installs it); Playwright never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from online_api.server import ApiProcess, settings_env
from ops.lag import measure
from streamrec.events import now_ms
from streamrec.kafka_io import EventProducer
from streamrec.settings import REPO_ROOT, Settings
from streamrec.simulate import SimConfig, Storefront, run, sim_clock
from streamrec.store import RedisStore
from streamrec.store.catalog import put_items
from tests.integration.conftest import endpoints, make_settings  # noqa: F401 - real services, isolated settings

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google services, which a closed
# network refuses (and which slows the start-up); the page itself only talks to 127.0.0.1.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HISTORY_EVENTS = 20_000
HISTORY_HOURS = 2  # recent enough that the 1-hour trending window is filled


@dataclass
class StoreSystem:
    """The running chain behind one storefront."""

    url: str
    settings: Settings
    store: RedisStore
    version: str


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class WorkerProcess:
    """``streamrec worker`` in its own process group; ``stop`` always ends it."""

    def __init__(self, settings: Settings, log: Path) -> None:
        env = {**os.environ, **settings_env(settings), "OPENBLAS_NUM_THREADS": "1"}
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "worker", "--metrics-port", "0"],
                                     env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_caught_up(self, settings: Settings, timeout_s: float = 90.0) -> None:
        """Until the worker's group committed every partition up to its end (it applied the history)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.proc.returncode}:\n{_tail(self.log)}")
            groups = measure(settings, [settings.consumer_group], timeout=3.0)
            parts = groups[0].partitions if groups else []
            if parts and all(p.current_offset == p.log_end_offset or p.log_end_offset == 0 for p in parts):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the worker did not catch up within {timeout_s:.0f}s:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


def _publish_history(settings: Settings, store: RedisStore) -> str:
    """Simulated, back-dated history on the test's topics, the catalogue, and a model refitted on it."""
    from batch.refit import run_refit

    world = Storefront(SimConfig(seed=11))
    producer = EventProducer(settings)
    clock = sim_clock(now_ms() - HISTORY_HOURS * 3_600_000, HISTORY_EVENTS / (HISTORY_HOURS * 3600))
    run(producer.send, rate=0, count=HISTORY_EVENTS, store=world, clock=clock)
    assert producer.flush(30) == 0, "history events were not delivered"
    put_items(store, world.catalog())
    return str(run_refit(settings, store)["version"])


@pytest.fixture
def storefront_system(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[StoreSystem]:  # noqa: F811
    """Model, worker and API (with the storefront) on isolated topics and Redis keys."""
    key = f"browser-{uuid.uuid4().hex}"
    # The page gets a collector-only key, as in a real deployment (docs/storefront.md).
    settings = make_settings(batch_snapshot_dir=tmp_path / "snapshot", api_ingest_keys=key, storefront_ingest_key=key)
    store = RedisStore(settings)
    version = _publish_history(settings, store)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    api = ApiProcess(settings, log_path=tmp_path / "api.log", log_level="info")
    try:
        worker.wait_caught_up(settings)
        api.start(wait="/readyz")
        yield StoreSystem(url=f"{api.url}/store", settings=settings, store=store, version=version)
    finally:
        api.stop()
        worker.stop()
        store.close()


@pytest.fixture
def results_dir(request: pytest.FixtureRequest) -> Path:
    """Where screenshots go: next to the junit XML (``make test`` writes test-results/junit.xml)."""
    xml = request.config.getoption("xmlpath", None)
    out = Path(xml).resolve().parent if xml else REPO_ROOT / "test-results"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    """A page in a fresh Chromium profile (a new visitor: empty localStorage)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/bootstrap.sh` (installs Debian's chromium)")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield page
        finally:
            context.close()


def publish_screenshot(path: Path) -> None:
    """Copy a screenshot into docs/img when STREAMREC_UPDATE_DOCS=1 (docs show what the test saw)."""
    if os.environ.get("STREAMREC_UPDATE_DOCS") == "1":
        docs = REPO_ROOT / "docs" / "img"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs / path.name)
