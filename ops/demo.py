"""`streamrec demo`: the whole system on this machine, and where to look.

Stages, each waited for before the next: the local stack; a first model (back-dated simulated history,
then one ``batch run``; skipped when a model already serves); the worker, until it folded in the
history; the API with the storefront page, until ``/readyz``; then background traffic, the periodic
refit and the consumer-lag exporter. Every process is a child with its log under ``.stack/logs``; the
demo prints what runs where and on Ctrl-C stops the children (and the stack, when the demo started it).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from streamrec.localstack import LocalStack, main_progress
from streamrec.settings import Settings
from streamrec.store import redacted_url

HISTORY_HOURS = 24


class DemoError(RuntimeError):
    """A stage failed; the message says which and ends with its log tail."""


@dataclass
class Child:
    """A process the demo started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


def _start(name: str, args: list[str], logs: Path, env: dict[str, str]) -> Child:
    log = logs / f"{name}.log"
    out = open(log, "ab")  # noqa: SIM115 - the child owns the file for its lifetime
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return Child(name, proc, log)


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in reversed(children):
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _tail(child: Child, lines: int = 20) -> str:
    return "\n".join(child.log.read_text(errors="replace").splitlines()[-lines:])


def _check(children: list[Child]) -> None:
    """Raise :class:`DemoError` when a child exited."""
    for child in children:
        code = child.proc.poll()
        if code is not None:
            raise DemoError(f"{child.name} exited with {code}; last lines of {child.log}:\n{_tail(child)}")


def _run_once(name: str, args: list[str], logs: Path, env: dict[str, str], children: list[Child]) -> None:
    """Run a one-shot command as a child (Ctrl-C still stops it) and wait for it to succeed."""
    child = _start(name, args, logs, env)
    children.append(child)
    try:
        code = child.proc.wait()
    finally:
        if child.proc.poll() is not None:
            children.remove(child)
    if code != 0:
        raise DemoError(f"`streamrec {' '.join(args)}` failed ({code}); last lines of {child.log}:\n{_tail(child)}")


def _history(settings: Settings, *, seed: int, count: int) -> None:
    """Back-dated simulated history and the catalogue, from the world the background traffic uses.

    Produced here rather than by a second ``streamrec simulate``: two runs with one seed draw the same
    event stream, so the traffic would repeat the history's event ids and the worker would drop it as
    duplicates. The world (items, users, tastes) is drawn when the simulator is built; re-seeding its
    generator afterwards gives this history its own events. It adds no items or users, so the ones the
    traffic adds later (``i1000``..., ``u2000``...) mean the same in the catalogue and the model.
    """
    from streamrec import simulate
    from streamrec.events import now_ms
    from streamrec.kafka_io import EventProducer, ensure_topics
    from streamrec.store import RedisStore
    from streamrec.store.catalog import put_items

    world = simulate.Storefront(simulate.SimConfig(seed=seed, new_user_share=0.0, new_item_every=2**62))
    world.rng.seed(f"streamrec-demo-history-{seed}")
    ensure_topics(settings)
    producer = EventProducer(settings)
    clock = simulate.sim_clock(now_ms() - HISTORY_HOURS * 3_600_000, count / (HISTORY_HOURS * 3600))
    stats = simulate.run(producer.send, rate=0, count=count, store=world, clock=clock,
                         progress=lambda st: _say(f"history: {st.events:,} events produced"))
    left = producer.flush(60)
    if left:
        raise DemoError(f"{left} history events were not delivered to Kafka")
    store = RedisStore(settings)
    try:
        put_items(store, world.catalog())
    finally:
        store.close()
    _say(f"history: {stats.events:,} events ({stats.by_type['purchase']:,} purchases), "
         f"{len(world.item_category):,} items in the catalogue")


def _first_model(settings: Settings, logs: Path, env: dict[str, str], children: list[Child], *, seed: int,
                 history: int) -> None:
    from streamrec.store import RedisStore
    from streamrec.store.models import current_version

    store = RedisStore(settings)
    try:
        version = current_version(store)
    finally:
        store.close()
    if version is not None:
        _say(f"model {version} already serves: skipping the simulated history (make clean starts afresh)")
        return
    _say(f"producing {history:,} simulated events back-dated over the last {HISTORY_HOURS} h, and the catalogue")
    _history(settings, seed=seed, count=history)
    _say("fitting the first model on it (streamrec batch run)")
    _run_once("batch-first", ["batch", "run"], logs, env, children)


def _wait_caught_up(settings: Settings, children: list[Child], timeout_s: float = 600) -> None:
    """Wait until the worker's consumer group has no lag (it folded in the history)."""
    from ops.lag import measure

    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while time.monotonic() < deadline:
        _check(children)
        try:
            groups = measure(settings, [settings.consumer_group], timeout=3.0)
            lag = groups[0].total_lag if groups else None
            committed = groups and all(p.current_offset is not None or p.log_end_offset == 0
                                       for p in groups[0].partitions)
        except Exception as exc:  # Kafka still settling after start-up: try again
            lag, committed = None, False
            _say(f"waiting for the worker's consumer group ({type(exc).__name__})")
        if lag == 0 and committed:
            return
        if lag is not None and time.monotonic() - last_report > 5:
            _say(f"worker catching up: {lag:,} events to go")
            last_report = time.monotonic()
        time.sleep(1)
    raise DemoError(f"the worker did not catch up within {timeout_s:.0f}s; see {logs_of(children, 'worker')}")


def logs_of(children: list[Child], name: str) -> str:
    return next((str(c.log) for c in children if c.name == name), "its log")


def _wait_ready(url: str, children: list[Child], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check(children)
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise DemoError(f"{url} did not answer 200 within {timeout_s:.0f}s; see {logs_of(children, 'api')}")


def ingest_env(settings: Settings) -> dict[str, str]:
    """The variables that give the storefront page its collector-only key.

    The page posts events with a key the server hands every browser, so it gets an ingest key
    (``STREAMREC_API_INGEST_KEYS``: the collector only), never one of ``STREAMREC_API_KEYS``: a demo key
    made per run unless ``STREAMREC_STOREFRONT_INGEST_KEY`` names one (docs/storefront.md). Configured
    full-access keys are left as they are.
    """
    key = settings.storefront_ingest_key or f"demo-{secrets.token_urlsafe(12)}"
    if key in settings.api_key_list:
        raise DemoError("STREAMREC_STOREFRONT_INGEST_KEY is one of STREAMREC_API_KEYS: the page would hand a "
                        "full-access key to every browser. Give it a key of its own, or unset it and the demo "
                        "makes one")
    ingest = settings.api_ingest_key_list
    return {"STREAMREC_API_INGEST_KEYS": ",".join([*ingest, *([] if key in ingest else [key])]),
            "STREAMREC_STOREFRONT_INGEST_KEY": key}


def run(settings: Settings, *, rate: float = 100.0, seed: int = 42, keep_stack: bool = False,
        history: int = 40_000, batch_every: str | None = "10m") -> int:
    """Run the demo until Ctrl-C. Returns the exit code."""
    from online_api.security import WeakApiKey, check_key_strength

    try:  # checked before anything starts: the API would refuse a guessable full-access key only at the end
        check_key_strength(settings)
        # The demo's storefront shows "also viewed": its worker keeps co-visitation (opt-in elsewhere: it
        # costs the worker about half its capacity, docs/streaming.md).
        env = {"STREAMREC_WORKER_COVISITATION": "true", **os.environ, "OPENBLAS_NUM_THREADS": "1",
               **ingest_env(settings)}
    except (DemoError, WeakApiKey) as exc:
        print(f"streamrec demo: {exc}", file=sys.stderr, flush=True)
        return 1
    stack = LocalStack(settings, progress=main_progress)
    was_up = all(s.healthy for s in stack.status())
    stack.up()
    logs = Path(settings.stack_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
    api = f"http://{host}:{settings.api_port}"
    children: list[Child] = []
    try:
        _first_model(settings, logs, env, children, seed=seed, history=history)
        _say("starting the worker (streamrec worker)")
        children.append(_start("worker", ["worker"], logs, env))
        _wait_caught_up(settings, children)
        _say(f"starting the API and the storefront on {api} (streamrec api)")
        children.append(_start("api", ["api"], logs, env))
        _wait_ready(f"{api}/readyz", children)
        children.append(_start("simulate", ["simulate", "--rate", str(rate), "--duration", "31536000", "--seed",
                                            str(seed), "--catalog"], logs, env))
        metrics = [f"{api}/metrics (API)", f"http://{settings.metrics_host}:{settings.worker_metrics_port}/metrics "
                   "(worker)"]
        if batch_every:
            children.append(_start("batch", ["batch", "run", "--every", batch_every], logs, env))
            metrics.append(f"http://{settings.metrics_host}:{settings.batch_metrics_port}/metrics (batch)")
        children.append(_start("lag", ["lag", "--serve"], logs, env))
        metrics.append(f"http://{settings.metrics_host}:{settings.lag_exporter_port}/metrics (consumer lag)")
        time.sleep(1.0)
        _check(children)
        print(
            "\nstreamrec demo is running\n"
            f"  storefront  {api}/store\n"
            f"  API docs    {api}/docs\n"
            f"  metrics     {metrics[0]}\n" + "".join(f"              {m}\n" for m in metrics[1:]) +
            "  lag         streamrec lag   (or: streamrec lag --watch)\n"
            f"  traffic     simulate at {rate:g} events/s; refit every {batch_every or 'never'}\n"
            f"  kafka       {settings.kafka_bootstrap}  topics {', '.join(settings.event_topics)}\n"
            f"  redis       {redacted_url(settings.redis_url)}\n"
            f"  logs        {logs}/{{{','.join(c.name for c in children)}}}.log\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            _check(children)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except DemoError as exc:
        print(f"streamrec demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _stop(children)
        if not was_up and not keep_stack:
            stack.down()
