"""Worker crash under load: SIGKILL the worker three times while events stream in, start a new one each
time; every event is applied exactly once, and the API keeps answering reads throughout.

Reproduce: ``.venv/bin/pytest -m reliability tests/reliability/test_worker_crash.py -v``
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from online_api.server import ApiProcess
from ops.bench_stream import publish_model
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.users import read_histories
from tests.helpers.processes import Worker, applied_offsets
from tests.reliability.common import count_5xx, exactly_once, strip_ids, user_counts, vector_errors, write_spec
from tests.reliability.load import Loader
from tests.reliability.procs import RssSampler, end_scenario
from tests.reliability.record import record

RATE = 3_000  # events/s produced
DURATION_S = 45.0
KILLS = 3
ITEMS = 2_000
USERS = 5_000
READ_RPS = 100


def test_sigkill_the_worker_under_load_applies_every_event_exactly_once(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    s = make_settings(als_factors=16, history_cap=50, worker_batch_size=2_000, worker_batch_within_s=0.2,
                      worker_session_timeout_s=6.0)
    publish_model(s, ITEMS, s.als_factors, seed=3)
    store = RedisStore(s)
    workers: list[Worker] = []
    loaders: list[Loader] = []
    api = ApiProcess(s, log_path=tmp_path / "api.log")
    kills: list[dict[str, float]] = []
    try:
        api.start()
        api.wait_for("/readyz")
        workers.append(Worker(s, tmp_path, "worker-0"))
        workers[0].metrics_url()  # started (RSS is sampled from here)
        spec = write_spec(tmp_path / "reads.json", [
            {"method": "GET", "path": "/v1/users/{user}/recommendations?k=10", "weight": 8, "kind": "recommendations"},
            {"method": "GET", "path": "/v1/trending?window=1h", "weight": 1, "kind": "trending"},
            {"method": "GET", "path": "/v1/items/{item}/similar?k=10", "weight": 1, "kind": "similar"}],
            users=[f"u{i}" for i in range(USERS)], items=[f"i{i}" for i in range(ITEMS)])
        events = Loader("events", s, tmp_path, "events", "--rate", str(RATE), "--duration", str(DURATION_S),
                        "--users", str(USERS), "--items", str(ITEMS))
        reads = Loader("http", s, tmp_path, "reads", "--url", api.url, "--spec", str(spec), "--rate", str(READ_RPS),
                       "--duration", str(DURATION_S + 5), "--connections", "4")
        loaders += [events, reads]
        rss = RssSampler({"api": api.pid, "worker-0": workers[0].pid}, every_s=5.0).start()
        rng = random.Random(8)

        def progress() -> int:
            return sum(applied_offsets(s, store).values())

        for n in range(KILLS):
            before = progress()
            workers[-1].wait_until(lambda b=before: progress() > b, 90,  # type: ignore[misc]
                                   f"worker-{n} applying events")
            time.sleep(rng.uniform(2.0, 5.0))  # mid-stream: batches are being applied right now
            assert workers[-1].alive(), workers[-1].tail()
            rss.sample()
            workers[-1].kill()
            killed_at = time.monotonic()
            at = progress()
            workers.append(Worker(s, tmp_path, f"worker-{n + 1}"))
            rss.pids[f"worker-{n + 1}"] = workers[-1].pid
            # recovery: the new worker applies events again (after the dead member's session timed out)
            recovered = workers[-1].wait_until(lambda a=at: progress() > a, 120,  # type: ignore[misc]
                                               f"worker-{n + 1} resuming")
            kills.append({"killed_after_s": round(killed_at - rss._t0, 1), "resumed_after_s": round(recovered, 1)})
        last = workers[-1]
        produced = events.wait(DURATION_S + 120)
        read_result = reads.wait(DURATION_S + 120)
        drain_s = last.wait_applied(store, 180)
        rss.stop()

        counts = exactly_once(produced["per_user"], user_counts(store))
        hist = read_histories(store, sorted(produced["per_user"]))
        wrong_len = [u for u, n in produced["per_user"].items() if len(hist[u]) != min(n, s.history_cap)]
        vectors = vector_errors(s, store, sorted(produced["per_user"]))
        stats_applied = sum(w.applied() for w in workers)
        figures = {
            "command": "pytest -m reliability tests/reliability/test_worker_crash.py",
            "events_sent": produced["sent"], "events_delivered": produced["delivered"], **counts,
            "kills": kills, "worker_processes": len(workers), "drain_after_load_s": round(drain_s, 1),
            "applied_by_worker_stats": stats_applied, "histories_wrong_length": len(wrong_len),
            "vectors": vectors, "reads": strip_ids(read_result), "rss": rss.start_end(),
            "load": {"rate": RATE, "duration_s": DURATION_S, "users": USERS, "items": ITEMS},
        }
        record("worker_crash", figures)
        assert produced["undelivered"] == 0 and not produced["failed"], produced
        assert counts["lost"] == 0 and counts["doubled"] == 0, counts
        assert counts["applied"] == produced["delivered"]
        assert not wrong_len, wrong_len[:5]
        assert vectors["missing"] == 0 and vectors["max_rel_error"] < 1e-3, vectors
        assert count_5xx(read_result) == 0 and not read_result["errors"], strip_ids(read_result)
        assert set(read_result["status"]) == {"200"}, read_result["status"]
        assert last.alive()
    finally:
        end_scenario(api, store, loaders, workers)
