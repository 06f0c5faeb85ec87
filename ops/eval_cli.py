"""`streamrec eval`: tune every method on a validation window, then report them on a later test window.

Any event log (``--events PATH --columns ts=COL,user=COL,item=COL[,type=COL][,session=COL]`` with
``--validate-from``, ``--test-from``, ``--test-until``) or a preset (``--dataset globo|completejourney``,
which only fixes the file and the dates) goes through the same path:

1. validation: a model fitted before ``--validate-from``; every method tunes its own parameters on
   the validation window (:mod:`ops.eval_tune`), the hybrid learns its blend weights there;
2. test: everything before ``--test-from`` refits ALS with the chosen parameters; a prequential replay
   of the test window answers every query with every method (:mod:`models.hybrid_replay`).

Progress goes to stderr; ``--json`` makes the last stdout line the summary
``{"k", "queries", "methods": {name: {"hr", "ndcg", "recall", "map"}}, "chosen"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.settings import Settings

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Protocol:
    """The windows (epoch ms) of one evaluation and whether seen items are excluded."""

    name: str
    val_start_ms: int
    test_start_ms: int
    test_end_ms: int
    exclude_seen: bool


def presets(exclude_seen: bool | None) -> dict[str, Protocol]:
    """The built-in datasets' windows (Globo days in Brasília time; Complete Journey weeks 40-43 / 44-47)."""
    from streamrec.datasets import globo_day_ms

    jan1, week = 1_483_228_800_000, 7 * DAY_MS
    return {"globo": Protocol("globo", globo_day_ms(6), globo_day_ms(7), globo_day_ms(8),
                              True if exclude_seen is None else exclude_seen),
            "completejourney": Protocol("completejourney", jan1 + 39 * week, jan1 + 43 * week, jan1 + 47 * week,
                                        False if exclude_seen is None else exclude_seen)}


def parse_time(text: str) -> int:
    """Epoch ms of a date or ISO 8601 time (UTC unless it names an offset), or of an epoch number (s or ms)."""
    if text.strip().lstrip("-").isdigit():
        value = int(text)
        return value * 1000 if abs(value) < 100_000_000_000 else value
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


def _progress(start: float) -> Any:
    def say(msg: str) -> None:
        print(f"[eval {time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)
    return say


def _load(args: argparse.Namespace, settings: Settings) -> tuple[Any, Protocol, Any]:
    """The dataset and its windows, and with ``--cold-start`` its metadata (some users' history hidden)."""
    ds, proto = _load_log(args, settings)
    if not args.cold_start:
        return ds, proto, None
    from ops.eval_cold import ColdData, hide_users, load_cold_data

    items, users = load_cold_data(args, ds)
    profiled = np.array([u is not None for u in users], dtype=bool)
    log, hidden = hide_users(ds.log, profiled, proto.test_start_ms, proto.test_end_ms, args.cold_users, args.seed)
    return replace(ds, log=log), proto, ColdData(items, users, hidden, args.arrival_days)


def _load_log(args: argparse.Namespace, settings: Settings) -> tuple[Any, Protocol]:
    from streamrec import datasets

    weighting = settings.weighting()
    exclude = None if args.exclude_seen is None else args.exclude_seen == "true"
    if args.dataset is not None:
        proto = presets(exclude)[args.dataset]
        ds = (datasets.load_globo(args.data_path or datasets.GLOBO_PATH, weighting) if args.dataset == "globo"
              else datasets.load_completejourney(weighting))
        return ds, proto
    ds = datasets.load_events(args.events, datasets.parse_columns(args.columns), weighting)
    proto = Protocol(Path(args.events).name, parse_time(args.validate_from), parse_time(args.test_from),
                     parse_time(args.test_until), True if exclude is None else exclude)
    return ds, proto


def _window(log: Any, lo: int, hi: int, exclude_seen: bool, sample: int, seed: int, settings: Settings,
            k: int, say: Any) -> Any:
    from models import evaluation as ev
    from ops.eval_tune import Window

    rcfg = ev.ReplayConfig(k=k, exclude_seen=exclude_seen, history_cap=settings.history_cap,
                           new_item_min_interactions=settings.new_item_min_interactions)
    queries, users, relevant = ev.prequential_queries(log, lo, hi, exclude_seen, sample, seed, say)
    return Window(log, lo, hi, queries, users, relevant, rcfg, say)


def _als_start(settings: Settings) -> dict[str, Any]:
    return {"factors": settings.als_factors, "regularization": settings.als_regularization,
            "alpha": settings.als_alpha, "iterations": settings.als_iterations,
            "half_life_days": settings.half_life_days}


def run_eval(ds: Any, proto: Protocol, settings: Settings, *, k: int, sample: int, val_sample: int, seed: int,
             ranker_sample: int = 0, cold: Any = None) -> dict[str, Any]:
    """Validation search, then the test replay of every method (with ``cold``, an
    :class:`ops.eval_cold.ColdData`, also with cold start, and its slices); the result as a JSON-able dict."""
    from models import evaluation as ev
    from models.hybrid_replay import answers
    from models.signal_state import SignalState
    from ops.eval_tune import fit, tune
    from streamrec.ranking_settings import ranking_config

    t0 = time.perf_counter()
    say, log = _progress(t0), ds.log
    (val_lo, val_hi), (test_lo, test_hi) = ev.time_split(
        log, [proto.val_start_ms, proto.test_start_ms, proto.test_end_ms])
    say(f"{proto.name}: {len(log):,} events, {log.n_users:,} users, {log.n_items:,} items; train {val_lo:,} / "
        f"validation {val_hi - val_lo:,} / test {test_hi - test_lo:,} events; exclude_seen={proto.exclude_seen}")
    if val_hi <= val_lo or test_hi <= test_lo:
        raise ValueError("the validation and test windows must both hold events")
    val = _window(log, val_lo, val_hi, proto.exclude_seen, val_sample, seed, settings, k, say)
    wide = _window(log, val_lo, val_hi, proto.exclude_seen, ranker_sample, seed, settings, k, say) \
        if ranker_sample > val_sample else None
    cold_for = None
    if cold is not None:
        from ops.eval_cold import cold_state
        from streamrec.ranking_settings import cold_start_config

        def cold_for(m: Any) -> Any:  # the validation model's cold-start state: the hybrid tunes with content
            return cold_state(log, val_lo, m, cold, cold_start_config(settings))
    mc, als, record = tune(val, _als_start(settings), replace(ranking_config(settings),
                                                              exclude_seen=proto.exclude_seen),
                           wide, learn_ranker=ranker_sample > 0, cold_for=cold_for)
    model = fit(log, test_lo, als)
    say(f"test refit: {model.fit_seconds:.1f}s; replaying the test window")
    test = _window(log, test_lo, test_hi, proto.exclude_seen, sample, seed, settings, k, say)
    state = SignalState(log, test_lo, test_hi, (mc.covis,), (mc.popular_half_life_s,))
    extra: dict[str, Any] = {}
    if cold is None:
        from models.hybrid_replay import replay_answers

        res = replay_answers(log, test_lo, test_hi, test.queries, test.users, test.relevant,
                             ev.catalogue(log, test_hi), state, (mc.trending,), model, test.rcfg, answers(mc, True),
                             say)
        metrics = res.metrics(k)
    else:
        from ops.eval_cold import replay_with_slices
        from streamrec.ranking_settings import cold_start_config

        metrics, slices, summary_ = replay_with_slices(log, test_lo, test_hi, test, state, mc, model, cold,
                                                       cold_start_config(settings), say)
        extra = {"slices": slices, "cold_start": {**summary_, "hidden_users": int(cold.hidden.sum())}}
    say("done")
    return {"dataset": proto.name, "source": ds.source, "events": len(log), "users": log.n_users,
            "items": log.n_items, "exclude_seen": proto.exclude_seen, "k": k, "sample": sample,
            "val_sample": val_sample, "seed": seed,
            "windows_ms": asdict(proto), "events_per_window": {"train": val_lo, "validation": val_hi - val_lo,
                                                               "refit": test_lo, "test": test_hi - test_lo},
            "queries": len(test.queries), "test": metrics, "chosen": _chosen(mc, als), "validation": record,
            "ranker_text": mc.ranker.to_text() if mc.ranker is not None else None,
            "history_cap": settings.history_cap,
            **extra, "seconds": round(time.perf_counter() - t0, 1)}


def _chosen(mc: Any, als: dict[str, Any]) -> dict[str, Any]:
    return {"trending": asdict(mc.trending), "trending_label": mc.trending.label,
            "popular_half_life_s": mc.popular_half_life_s, "frequency_half_life_s": mc.frequency_half_life_s,
            "covisitation": asdict(mc.covis), "session_items": mc.session_items,
            "session_decay": mc.session_decay, "als": als, "hybrid": asdict(mc.hybrid),
            "learned_ranker": mc.ranker is not None}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The one-line JSON summary: k, queries, each method's HR, NDCG, recall and MAP, the chosen parameters."""
    k = result["k"]
    def methods(test: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {m: {"hr": v[f"hit_rate@{k}"], "ndcg": v[f"ndcg@{k}"], "recall": v[f"recall@{k}"],
                    "map": v[f"map@{k}"]} for m, v in test.items()}

    out = {"k": k, "queries": result["queries"], "methods": methods(result["test"]), "chosen": result["chosen"]}
    if "slices" in result:
        out["slices"] = {name: {"queries": s["queries"], "methods": methods(s["methods"])}
                         for name, s in result["slices"].items()}
    return out


def write_settings(result: dict[str, Any], path: Path) -> None:
    """The hybrid's chosen configuration as ``STREAMREC_*`` lines (an env file for the worker and the API)."""
    from models.covisitation import CovisConfig
    from models.ranking import RankingConfig
    from streamrec.ranking_settings import settings_lines

    chosen = result["chosen"]
    lines = settings_lines(RankingConfig(**chosen["hybrid"]), CovisConfig(**chosen["covisitation"]))
    if result.get("ranker_text"):  # LightGBM's text model beside the env file, named by it
        model_file = path.with_name(path.name + ".ranker.txt")
        model_file.write_text(result["ranker_text"])
        lines.append(f"STREAMREC_RANK_MODEL_FILE={model_file.resolve()}")
    k = result["k"]
    ndcg = result["test"]["hybrid"][f"ndcg@{k}"]
    head = [f"# streamrec eval on {result['dataset']} (exclude_seen={result['exclude_seen']}): hybrid NDCG@{k} "
            f"{ndcg:.4f}",
            f"# trending window chosen: {chosen['trending_label']}"]
    path.write_text("\n".join(head + lines) + "\n")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec eval`` to the CLI."""
    p = sub.add_parser(
        "eval", help="offline evaluation on any event log: every method tuned on validation, reported on test",
        description="Time split plus prequential replay (before each event, ask for the user's top k given only "
        "the events before it, then apply the event). Methods: trending, popular, personal_frequency, "
        "covisitation, als_batch, als_streaming, hybrid. Each tunes its parameters on the validation window; only "
        "the test window is reported. Needs `pip install 'streamrec[eval]'` for the presets; see "
        "docs/evaluation.md.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=("globo", "completejourney"), help="a built-in dataset and its windows")
    src.add_argument("--events", help="an event log: CSV, CSV.gz, Parquet or JSON lines")
    p.add_argument("--columns", help="ts=COL,user=COL,item=COL[,type=COL][,session=COL] (with --events)")
    p.add_argument("--validate-from", help="start of the validation window (date, ISO time or epoch; UTC)")
    p.add_argument("--test-from", help="start of the test window (the end of validation)")
    p.add_argument("--test-until", help="end of the test window (exclusive)")
    p.add_argument("--exclude-seen", choices=("true", "false"),
                   help="never recommend the user's own items (default: true; completejourney preset: false)")
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--sample", type=int, default=10_000,
                   help="test queries evaluated (fixed, seeded subset; every event is still applied)")
    p.add_argument("--val-sample", type=int, default=3_000, help="validation queries evaluated per candidate")
    p.add_argument("--ranker-sample", type=int, default=20_000,
                   help="validation queries the hybrid's weights and learned ranker are fitted on (0: no learned "
                   "ranker, the blend only)")
    p.add_argument("--cold-start", action="store_true",
                   help="add the item and user cold-start slices (needs --items/--users, or the completejourney "
                   "preset's products and demographics); the hybrid then uses content, beside "
                   "hybrid_without_content")
    p.add_argument("--items", type=Path, help="catalogue rows for --events logs (CSV, JSON lines or Parquet)")
    p.add_argument("--users", type=Path, help="user profiles for --events logs (CSV, JSON lines or Parquet)")
    p.add_argument("--item-id-column", default="item_id", help="the id column of --items (default item_id)")
    p.add_argument("--user-id-column", default="user_id", help="the id column of --users (default user_id)")
    p.add_argument("--cold-users", type=float, default=0.5,
                   help="with --cold-start: share of the profiled users active in the test window whose earlier "
                   "history is hidden (fixed by --seed; default 0.5)")
    p.add_argument("--arrival-days", type=float, default=7.0,
                   help="with --cold-start: an item without events before a window enters the catalogue this many "
                   "days before its first event (default 7)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-path", help="Globo clicks CSV (default ../shared/datasets/globo-g1-clicks/...)")
    p.add_argument("--out", type=Path, help="markdown report to update in place (e.g. docs/evaluation.md)")
    p.add_argument("--write-settings", type=Path, help="write the hybrid's chosen STREAMREC_* lines to this file")
    p.add_argument("--json", action="store_true", help="last stdout line: the JSON summary")
    p.set_defaults(func=_handler)


def _check(args: argparse.Namespace) -> str | None:
    if args.k < 1 or args.sample < 1 or args.val_sample < 1:
        return "--k, --sample and --val-sample must be positive"
    if args.ranker_sample < 0:
        return "--ranker-sample must be 0 or positive"
    if not 0 <= args.cold_users <= 1:
        return "--cold-users must lie in [0, 1]"
    if (args.items is not None or args.users is not None) and not args.cold_start:
        return "--items and --users are read with --cold-start"
    if args.events is not None:
        missing = [f"--{n.replace('_', '-')}" for n in ("columns", "validate_from", "test_from", "test_until")
                   if getattr(args, n) is None]
        if missing:
            return f"--events needs {', '.join(missing)}"
    return None


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ops.eval_report import render_text, write_report
    from streamrec.datasets import DatasetUnavailable

    problem = _check(args)
    if problem is not None:
        print(f"streamrec: {problem}", file=sys.stderr)
        return 2
    try:
        ds, proto, cold = _load(args, settings)
        result = run_eval(ds, proto, settings, k=args.k, sample=args.sample, val_sample=args.val_sample,
                          seed=args.seed, ranker_sample=args.ranker_sample, cold=cold)
    except (DatasetUnavailable, ValueError, KeyError) as exc:
        print(f"streamrec: {exc}", file=sys.stderr)
        return 1
    result["command"] = "streamrec eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "streamrec eval"
    if args.write_settings is not None:
        write_settings(result, args.write_settings)
        print(f"[eval] wrote {args.write_settings}", file=sys.stderr, flush=True)
    if args.out is not None:
        print(f"[eval] wrote {write_report(result, args.out)}", file=sys.stderr, flush=True)
    print(render_text(result))
    if args.json:
        print(json.dumps(summary(result)))
    return 0
