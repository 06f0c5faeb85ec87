"""Load generators for the reliability scenarios, each run as its own process (the machine has 2 cores and
one GIL per process): ``python -m tests.reliability.load events|http ... --out result.json``.

* ``events``: produces simulated click/purchase events straight to Kafka at a fixed rate with the
  confluent producer (idempotent, acks=all). The simulator runs once to build a pool of (user, item, type)
  rows; each send only stamps a fresh event id and the wall-clock time, so 5,000 events/s cost a few
  percent of a core. Writes how many events each user had *delivered* (acknowledged by Kafka).
* ``http``: an open-loop HTTP/1.1 client on raw asyncio streams with keep-alive connections: requests are
  scheduled at a fixed rate over the connections, drawn from a weighted mix of GETs and event POSTs.
  Writes status codes per kind, latencies, transport errors and hangs, and the ids of the events the
  collector answered 202 (and 503) for.

Both stop at ``--duration``, on SIGTERM, or when ``--stop-file`` appears, and always write their result.
Settings (topics, bootstrap) come from the STREAMREC_* environment like every streamrec process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

STOP = False


def _on_term(*_: Any) -> None:
    global STOP
    STOP = True


def _stopped(stop_file: Path | None) -> bool:
    return STOP or (stop_file is not None and stop_file.exists())


# ------------------------------------------------------------------------------------------- events
def event_pool(n: int, users: int, items: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(event type, key, JSON body between the event id and the ts) for ``n`` simulated events."""
    from streamrec.simulate import SimConfig, Storefront

    world = Storefront(SimConfig(seed=seed, users=users, items=items, new_item_every=10**9))
    out = []
    stream = world.events(lambda: 1_700_000_000_000)
    for _ in range(n):
        e = next(stream)
        body: dict[str, Any] = {"user_id": e.user_id, "item_id": e.item_id, "type": e.type.value}
        if e.quantity is not None:
            body["quantity"] = e.quantity
        if e.price is not None:
            body["price"] = e.price
        if e.context:
            body["context"] = e.context
        middle = json.dumps(body, separators=(",", ":"))[1:-1].encode()
        out.append((e.type.value, e.user_id.encode(), middle))
    return out


def run_events(args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka import KafkaError

    from streamrec.events import now_ms
    from streamrec.kafka_io import EventProducer
    from streamrec.settings import Settings

    settings = Settings()
    pool = event_pool(args.pool, args.users, args.items, args.seed)
    topics = {etype: settings.topic_for(etype) for etype in {p[0] for p in pool}}  # the event-type registry's
    producer = EventProducer(settings)
    delivered: Counter[bytes] = Counter()
    failed: Counter[str] = Counter()

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            delivered[msg.key()] += 1
        else:
            failed[str(err.name())] += 1

    rng = random.Random()  # event ids must differ from run to run (a repeated id is a duplicate)
    sent = 0
    started = time.monotonic()
    last_progress = started
    print(f"[load events] {args.rate:g}/s for {args.duration:g}s to {topics}", file=sys.stderr, flush=True)
    while not _stopped(args.stop_file) and time.monotonic() - started < args.duration:
        if args.count and sent >= args.count:
            break
        topic, key, middle = pool[sent % len(pool)]
        eid = uuid.UUID(int=rng.getrandbits(128), version=4)
        value = b'{"event_id":"%s",%s,"ts":%d}' % (str(eid).encode(), middle, now_ms())
        producer.send_raw(topics[topic], key, value, report)
        sent += 1
        if args.rate > 0 and sent % 25 == 0:
            ahead = sent / args.rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        if time.monotonic() - last_progress > 10:
            last_progress = time.monotonic()
            print(f"[load events] sent {sent} ({sent / (last_progress - started):.0f}/s)", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    left = producer.flush(120)
    return {"sent": sent, "delivered": sum(delivered.values()), "undelivered": left, "failed": dict(failed),
            "seconds": round(seconds, 2), "rate": round(sent / max(seconds, 1e-9), 1),
            "per_user": {k.decode(): v for k, v in delivered.items()}}


# ------------------------------------------------------------------------------------------- http
class HttpStats:
    def __init__(self) -> None:
        self.status: dict[str, Counter[int]] = defaultdict(Counter)
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.accepted: list[str] = []  # event ids answered 202
        self.unavailable: list[str] = []  # event ids answered 503 (may or may not be in Kafka)
        self.rejected: list[str] = []  # event ids answered with another status
        self.accepted_per_user: Counter[str] = Counter()
        self.sent = 0
        self.late_ms = 0.0  # how far behind the schedule the client fell at worst

    def as_dict(self, seconds: float) -> dict[str, Any]:
        codes: Counter[int] = Counter()
        for c in self.status.values():
            codes.update(c)
        lat = {kind: {"n": len(v), "p50_ms": round(float(np.percentile(v, 50)), 2),
                      "p99_ms": round(float(np.percentile(v, 99)), 2), "max_ms": round(max(v), 1)}
               for kind, v in self.latency_ms.items() if v}
        answered = sum(codes.values())
        return {"requests": self.sent, "answered": answered, "seconds": round(seconds, 2),
                "rps": round(answered / max(seconds, 1e-9), 1),
                "status": {str(k): v for k, v in sorted(codes.items())},
                "status_by_kind": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in self.status.items()},
                "latency": lat, "errors": dict(self.errors), "max_schedule_lag_ms": round(self.late_ms, 1),
                "accepted_per_user": dict(self.accepted_per_user), "accepted_ids": self.accepted,
                "unavailable_ids": self.unavailable, "rejected_ids": self.rejected}


def _event_body(rng: random.Random, users: list[str], items: list[str], n: int) -> tuple[bytes, list[tuple[str, str]]]:
    from streamrec.events import now_ms

    ts = now_ms()
    events, ids = [], []
    for _ in range(n):
        eid, user = str(uuid.UUID(int=rng.getrandbits(128), version=4)), rng.choice(users)
        ids.append((eid, user))
        events.append({"event_id": eid, "user_id": user, "item_id": rng.choice(items), "type": "click", "ts": ts})
    body = events[0] if n == 1 else {"events": events}
    return json.dumps(body, separators=(",", ":")).encode(), ids


async def _connection(host: str, port: int, spec: dict[str, Any], schedule: list[float], stats: HttpStats,
                      rng: random.Random, timeout_s: float, stop_file: Path | None) -> None:
    mix = spec["mix"]
    weights = [m.get("weight", 1) for m in mix]
    key = spec.get("key")
    users, items = spec.get("users", ["u0"]), spec.get("items", ["i0"])
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    for due in schedule:
        if _stopped(stop_file):
            break
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            stats.late_ms = max(stats.late_ms, -wait * 1000)
        req = rng.choices(mix, weights)[0]
        kind = req.get("kind", req["path"])
        path = req["path"].replace("{user}", rng.choice(users)).replace("{item}", rng.choice(items))
        body = b""
        ids: list[tuple[str, str]] = []  # (event id, user) of the events this request posts
        if req.get("events"):
            body, ids = _event_body(rng, users, items, int(req["events"]))
        elif req.get("body") is not None:
            body = req["body"].encode()
        head = f"{req['method']} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if key:
            head += f"X-API-Key: {key}\r\n"
        if body or req["method"] in ("POST", "PUT"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        message = head.encode() + b"\r\n" + body
        stats.sent += 1
        t0 = time.perf_counter()
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
            assert reader is not None and writer is not None
            writer.write(message)
            resp_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
            length = 0
            lower = resp_head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15 : lower.find(b"\r\n", at)])
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout_s)
            status = int(resp_head[9:12])
            if b"connection: close" in lower:
                writer.close()
                reader = writer = None
        except TimeoutError:
            stats.errors["timeout"] += 1  # a hang: the server did not answer in time
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            stats.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        stats.status[kind][status] += 1
        stats.latency_ms[kind].append((time.perf_counter() - t0) * 1000)
        if ids:
            target = stats.accepted if status == 202 else stats.unavailable if status == 503 else stats.rejected
            target.extend(eid for eid, _ in ids)
            if status == 202:
                stats.accepted_per_user.update(user for _, user in ids)
    if writer is not None:
        writer.close()


async def _http(args: argparse.Namespace) -> dict[str, Any]:
    spec = json.loads(Path(args.spec).read_text())
    host, _, port = args.url.removeprefix("http://").rstrip("/").partition(":")
    stats = HttpStats()
    start = time.monotonic() + 0.2
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    conns = args.connections
    schedules = [[start + i * interval for i in range(c, total, conns)] for c in range(conns)]
    rng = random.Random()  # fresh event ids in every run
    print(f"[load http] {args.rate:g} requests/s for {args.duration:g}s over {conns} connections to {args.url}",
          file=sys.stderr, flush=True)
    await asyncio.gather(*(_connection(host, int(port), spec, s, stats, random.Random(rng.random()), args.timeout,
                                       args.stop_file) for s in schedules))
    return stats.as_dict(time.monotonic() - start)


def run_http(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_http(args))


class Loader:
    """A load generator subprocess started by a test: ``wait()`` for its result, ``stop()`` to end it early."""

    def __init__(self, what: str, settings: Any, directory: Path, name: str, *args: str) -> None:
        from tests.helpers.processes import ChildProcess

        self.out = directory / f"{name}.json"
        self.stop_file = directory / f"{name}.stop"
        self.log_path = directory / f"{name}.log"
        self.child = ChildProcess(settings, what, "--out", str(self.out), "--stop-file", str(self.stop_file), *args,
                                  log_path=self.log_path, module="tests.reliability.load")
        self.proc = self.child.proc

    def stop(self) -> None:
        self.stop_file.touch()

    def wait(self, timeout_s: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self.out.exists():
            raise AssertionError(f"the load generator wrote no result:\n{self.log_path.read_text()[-3000:]}")
        return dict(json.loads(self.out.read_text()))

    def kill(self) -> None:
        self.child.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.load")
    sub = parser.add_subparsers(dest="what", required=True)
    e = sub.add_parser("events")
    e.add_argument("--rate", type=float, required=True)
    e.add_argument("--duration", type=float, default=3600.0)
    e.add_argument("--count", type=int, default=0)
    e.add_argument("--pool", type=int, default=50_000)
    e.add_argument("--users", type=int, default=5_000)
    e.add_argument("--items", type=int, default=2_000)
    e.add_argument("--seed", type=int, default=7)
    h = sub.add_parser("http")
    h.add_argument("--url", required=True)
    h.add_argument("--spec", required=True, help="JSON: {mix: [{method, path, weight, kind, events|body}], users, "
                   "items, key}")
    h.add_argument("--rate", type=float, required=True)
    h.add_argument("--duration", type=float, required=True)
    h.add_argument("--connections", type=int, default=8)
    h.add_argument("--timeout", type=float, default=30.0)
    for p in (e, h):
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--stop-file", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    result = run_events(args) if args.what == "events" else run_http(args)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)
    brief = {k: v for k, v in result.items() if not k.endswith("_ids") and not k.endswith("per_user")}
    print(f"[load {args.what}] {json.dumps(brief)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
