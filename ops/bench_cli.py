"""``streamrec bench foldin|refit|publish|stream|api``: the benchmarks' command line (they print figures)."""

from __future__ import annotations

import argparse
import json
import sys

from streamrec.settings import Settings


def _err(msg: str) -> None:
    print(f"streamrec: {msg}", file=sys.stderr, flush=True)


def _progress(msg: str) -> None:
    print(f"[batch] {msg}", file=sys.stderr, flush=True)  # the refit's own progress lines


def cmd_foldin(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_foldin import main

    return main(json_out=args.json, users=args.users, items=args.items, factors=args.factors, seed=args.seed)


def cmd_refit(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_refit import BenchError, run

    try:
        result = run(settings, dataset=args.dataset, progress=_progress, repeat=args.repeat,
                     new_days=args.new_days, cold=not args.no_cold)
    except BenchError as exc:
        _err(str(exc))
        return 1
    if not args.json:
        print(json.dumps(result, indent=2))
    keys = ("events", "refit_s", "implicit_fit_s", "ratio", "new_events", "cold_ratio")
    print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_stream import BenchConfig, run

    wanted = args.json if args.rate_from_capacity is None else args.rate_from_capacity
    from_capacity = wanted and not args.no_capacity
    cfg = BenchConfig(events=args.events, rate=args.rate, users=args.users, items=args.items,
                      factors=args.factors, seed=args.seed, core=not args.no_core, keep_files=args.keep_files,
                      capacity=not args.no_capacity, rate_from_capacity=from_capacity)
    if args.covisitation:
        settings = settings.model_copy(update={"worker_covisitation": True})
    return run(settings, cfg, json_only=args.json, compare_cluster=args.compare_cluster)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_api import BenchConfig, run

    if args.sizes:
        from ops.bench_sizes import SizesConfig, run_sizes

        try:
            sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
        except ValueError:
            _err(f"--sizes wants comma-separated item counts, got {args.sizes!r}")
            return 2
        return run_sizes(settings, SizesConfig(sizes=sizes, users=args.users, factors=args.factors,
                                               duration_s=args.duration, connections=args.connections),
                         json_out=args.json)

    cfg = BenchConfig(items=args.items, users=args.users, factors=args.factors, duration_s=args.duration,
                      connections=args.connections, inprocess_requests=args.inprocess,
                      compare_als=args.compare_als, compare_content=args.compare_content,
                      compare_cluster=args.compare_cluster)
    return run(settings, cfg, json_out=args.json)


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_publish import BenchConfig, main

    return main(settings, BenchConfig(users=args.users, factors=args.factors, repeat=args.repeat, seed=args.seed),
                json_out=args.json)


def _foldin(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "foldin", help="batched exact fold-in (FoldInSolver) versus implicit's recalculate_user",
        description="Fits a small implicit model on synthetic Zipf data, then times FoldInSolver.fold_in on "
        "a batch of new users against recalculate_user one user per call, and checks they agree.")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    p.add_argument("--users", type=int, default=1000, help="users folded in per batch")
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_foldin)


def _refit(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "refit", help="refit end to end on the 1.5 M-click dataset versus the bare implicit fit",
        description="Produces the Globo clicks to isolated topics and times, in one run, the refit end to end "
        "(read the new events, merge, fit, publish) and the bare implicit fit on the same matrix: in steady state "
        "(the previous run's snapshot holds all but the last --new-days of events) and cold (empty snapshot, "
        "every event read). Last line: events, refit_s, implicit_fit_s, ratio (steady state), new_events, "
        "cold_ratio.")
    p.add_argument("--json", action="store_true", help="print only the final JSON line")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="time N refit/bare-fit pairs of each kind and print medians (default 3: one fit can "
                   "swing by 30%% on a shared machine)")
    p.add_argument("--new-days", type=float, default=1.0, metavar="D",
                   help="steady state: the timed run reads the events of the last D days (default 1)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold runs (empty snapshot, every event read)")
    p.add_argument("--dataset", help="clicks CSV(.gz) with ts_ms,user_id,session_id,item_id "
                   "(default ../shared/datasets/globo-g1-clicks/clicks_2017-10-01_to_08.csv.gz from the repo root)")
    p.set_defaults(func=cmd_refit)


def _stream(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "stream", help="throughput and freshness of a real worker process at a given event rate",
        description="Publishes a synthetic model (64 factors, 50,000 items) under an isolated Redis prefix "
        "and topics, produces simulated events at --rate, runs a real `streamrec worker` process and "
        "measures its events/s and freshness p50/p99 (event time to the user's vector in Redis), plus the "
        "bare batched solver's events/s from the same run. Cleans up its keys and topics afterwards.")
    p.add_argument("--json", action="store_true", help="print only progress and the final JSON line")
    p.add_argument("--events", type=int, default=150_000, help="events in the measured phase")
    p.add_argument("--rate", type=float, default=10_000.0,
                   help="events per second produced in the rate phase (0: as fast as possible), unless "
                   "--rate-from-capacity")
    p.add_argument("--rate-from-capacity", action=argparse.BooleanOptionalAction, default=None,
                   help="offer 0.7 x the backlog capacity measured in the same run instead of --rate "
                   "(default: on with --json, off without)")
    p.add_argument("--no-capacity", action="store_true",
                   help="skip the capacity phase (draining a backlog of the measured events by renamed users)")
    p.add_argument("--users", type=int, default=20_000, help="simulated users at the start")
    p.add_argument("--items", type=int, default=50_000, help="items in the model")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-core", action="store_true",
                   help="skip re-running the processing core on the same events without Kafka")
    p.add_argument("--keep-files", action="store_true", help="keep the worker's log and per-batch stats file")
    p.add_argument("--compare-cluster", action="store_true",
                   help="run the same load on the single Redis and on the local Redis Cluster (started if "
                   "needed: `stack up --redis-cluster`), twice each in the order single, cluster, cluster, single; "
                   "the last line has the cluster's events_per_s (backlog capacity, mean of its runs), "
                   "single_events_per_s, cluster_to_single, lost and doubled")
    p.add_argument("--covisitation", action="store_true",
                   help="run the worker with co-visitation (STREAMREC_WORKER_COVISITATION; the core run measures "
                   "both either way)")
    p.set_defaults(func=cmd_stream)


def _api(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "api", help="load-test the recommendations endpoint through HTTP and in-process",
        description="Publishes a synthetic model under a private Redis prefix, starts the API as a uvicorn "
        "subprocess on a free loopback port, drives it with an asyncio keep-alive load generator, and "
        "measures the same work in-process without HTTP.")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured load")
    p.add_argument("--connections", type=int, default=2,
                   help="concurrent keep-alive connections (2 keep one worker busy; more only add queueing)")
    p.add_argument("--inprocess", type=int, default=3_000, help="requests for the in-process floor")
    p.add_argument("--sizes", metavar="N,N,...",
                   help="instead: for each catalogue size, factors resampled from a real fit, served through the "
                   "item index (recall_at_10 against the exact scan, index_build_s, RSS) and, at 50000, the exact "
                   "scan too (docs/operations.md#the-item-index)")
    p.add_argument("--compare-cluster", action="store_true",
                   help="also serve the same data from the local Redis Cluster (started if needed) in a second "
                   "API process; adds cluster {rps, p50_ms, p99_ms}, cluster_p99_ratio and cluster_rps_ratio")
    p.add_argument("--compare-als", action="store_true",
                   help="then drive the ALS-only path (STREAMREC_API_HYBRID=false) on the same data and report "
                   "both with the ratios p99_ratio and rps_ratio")
    p.add_argument("--compare-content", action="store_true",
                   help="give the data content and profile models (profiles for some users, content neighbours for "
                   "items without co-visitation ones), then drive a second API with the content sources off; "
                   "reports without_content and content_p99_ratio")
    p.set_defaults(func=cmd_api)


def _publish(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "publish", help="the refit's vector publish: redis-py (hiredis) versus hand-built RESP",
        description="Writes the same user vectors as one Redis hash both ways (redis-py pipelined HSET chunks, "
        "and RESP buffers built straight from the float32 block), alternating, under a private key prefix, and "
        "prints the median times and their ratio. Last line: users, factors, redis_py_s, resp_s, ratio.")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    p.add_argument("--users", type=int, default=235_000, help="vectors published (default: the Globo refit's)")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="timed rounds per path (medians)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_publish)


def cmd_memory(args: argparse.Namespace, settings: Settings) -> int:
    from ops.bench_memory import MemoryConfig, run_memory

    return run_memory(settings, MemoryConfig(users=args.users, history=args.history, items=args.items,
                                             factors=args.factors, seed=args.seed), args.json)


def _memory(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser(
        "memory", help="Redis bytes per user (history, counters, vector) and per item, for sizing",
        description="Writes synthetic users with full histories, their vectors and item factors under a private "
        "prefix with the project's own writers, measures the growth of Redis's used_memory per part, removes "
        "them. Last line: users, history, items, factors, bytes_per_user, bytes_per_item, seconds.")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--history", type=int, default=200, help="entries per user (STREAMREC_HISTORY_CAP's default)")
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_memory)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec bench`` and its benchmarks to the CLI."""
    parser = sub.add_parser("bench", help="benchmarks that print figures (foldin, refit, publish, stream, api, "
                            "memory)",
                            description="Each benchmark prints progress, then its figures; with --json "
                            "the last line is one JSON object.")
    bench = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for add in (_foldin, _refit, _publish, _stream, _api, _memory):
        add(bench)
