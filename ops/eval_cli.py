"""`streamrec eval`: choose parameters on a validation window, then report on a later test window.

For each dataset a :class:`Protocol` fixes the windows and the small grids. The run:

1. validation, trending: one replay of the validation window with every trending window in the grid;
2. validation, model: fit on the events before the validation window, replay it; a coordinate search
   over the ALS grid (alpha, regularization, factors, iterations, weight half-life; each step keeps
   the best value so far), scored by the streaming method's NDCG@k; the blend weight is chosen on
   the best model's replay;
3. test: refit on everything before the test window with the chosen parameters; prequential replay
   and the classic next-window evaluation of the test window.

Everything is in :mod:`models.evaluation`; this module only orchestrates, prints progress on stderr
and hands the result to :mod:`ops.eval_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from streamrec.settings import Settings

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Protocol:
    """Windows (epoch ms) and grids of one dataset's evaluation."""

    dataset: str
    val_start_ms: int  # train: events before; validation: [val_start, test_start)
    test_start_ms: int  # refit: events before; test: [test_start, test_end)
    test_end_ms: int
    windows: str  # the same in words, for the report
    exclude_seen: bool
    report_other_exclusion: bool
    trending: tuple[tuple[int, int, float], ...]  # (bucket_s, buckets, half_life_buckets)
    alphas: tuple[float, ...]
    half_lives_days: tuple[float | None, ...]
    timeline_bin_ms: int


def protocols() -> dict[str, Protocol]:
    """The two datasets' protocols (Globo days are Brasília days; Complete Journey weeks start on Sunday)."""
    from streamrec.datasets import globo_day_ms

    jan1 = 1_483_228_800_000  # 2017-01-01 00:00 (Complete Journey timestamps are local, naive)
    week = 7 * DAY_MS
    return {
        "globo": Protocol(
            "globo", globo_day_ms(6), globo_day_ms(7), globo_day_ms(8),
            "train 1-5 Oct 2017, validate 6 Oct; refit 1-6 Oct, test 7 Oct (Brasília days)",
            exclude_seen=True, report_other_exclusion=False,
            trending=((60, 60, 30.0), (60, 60, 10.0), (60, 30, 5.0), (60, 120, 30.0), (3600, 24, 12.0)),
            alphas=(2.0, 10.0, 40.0), half_lives_days=(None, 1.0), timeline_bin_ms=3_600_000),
        "completejourney": Protocol(
            "completejourney", jan1 + 39 * week, jan1 + 43 * week, jan1 + 47 * week,
            "train weeks 1-39, validate weeks 40-43; refit weeks 1-43, test weeks 44-47 (29 Oct-25 Nov 2017)",
            exclude_seen=False, report_other_exclusion=True,
            trending=((60, 60, 30.0), (3600, 24, 12.0), (86400, 7, 3.5), (86400, 28, 14.0)),
            alphas=(0.5, 2.0, 10.0), half_lives_days=(None, 30.0), timeline_bin_ms=DAY_MS),
    }


def _progress(start: float) -> Any:
    def say(msg: str) -> None:
        print(f"[eval {time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)
    return say


def _params(p: dict[str, Any]) -> Any:
    from models.training import ALSParams

    return ALSParams(factors=int(p["factors"]), regularization=float(p["regularization"]), alpha=float(p["alpha"]),
                     iterations=int(p["iterations"]))


def _half_life_s(p: dict[str, Any]) -> float | None:
    return None if p["half_life_days"] is None else float(p["half_life_days"]) * 86_400


def run_eval(dataset: str, settings: Settings, *, k: int, sample: int, val_sample: int, seed: int,
             data_path: str | None) -> dict[str, Any]:
    """The whole evaluation of one dataset, as a JSON-able dict (see :mod:`ops.eval_report`)."""
    import numpy as np

    from models import evaluation as ev
    from models.weighting import WeightingConfig
    from streamrec import datasets

    say = _progress(time.perf_counter())
    t0 = time.perf_counter()
    proto = protocols()[dataset]
    weighting = WeightingConfig(settings.click_weight, settings.purchase_weight)
    ds = (datasets.load_globo(data_path or datasets.GLOBO_PATH, weighting) if dataset == "globo"
          else datasets.load_completejourney(weighting))
    log = ds.log
    (val_lo, val_hi), (test_lo, test_hi) = ev.time_split(
        log, [proto.val_start_ms, proto.test_start_ms, proto.test_end_ms])
    say(f"{dataset}: {len(log):,} events, {log.n_users:,} users, {log.n_items:,} items; "
        f"train {val_lo:,} / validation {val_hi - val_lo:,} / test {test_hi - test_lo:,} events")
    base = ev.ReplayConfig(k=k, exclude_seen=proto.exclude_seen, blend_weights=(settings.blend_weight,),
                           history_cap=settings.history_cap,
                           new_item_min_interactions=settings.new_item_min_interactions)
    ndcg = f"ndcg@{k}"

    # 1. trending window and half-life
    trend_cfgs = tuple(ev.TrendingConfig(*t) for t in proto.trending)
    say(f"validation: trending, {len(trend_cfgs)} windows")
    res = ev.prequential(log, val_lo, val_hi, None, replace(base, trending=trend_cfgs), val_sample, seed, say)
    by_label = {t.label: m for t, m in zip(trend_cfgs, res.metrics(k).values(), strict=True)}
    best_trend = max(trend_cfgs, key=lambda t: by_label[t.label][ndcg])
    say(f"chosen trending: {best_trend.label} ({ndcg} {by_label[best_trend.label][ndcg]:.4f})")

    # 2. ALS parameters (coordinate search) and blend weight, on the same validation window
    blends = tuple(sorted({0.1, 0.2, 0.5, 0.8, 0.9, settings.blend_weight}))
    val_cfg = replace(base, trending=(best_trend,), blend_weights=blends)
    current = {"factors": settings.als_factors, "regularization": settings.als_regularization,
               "alpha": settings.als_alpha, "iterations": settings.als_iterations,
               "half_life_days": settings.half_life_days}
    grid: dict[str, list[Any]] = {"alpha": list(proto.alphas), "regularization": [0.05, 1.0],
                                  "factors": [32, 64], "iterations": [15, 30],
                                  "half_life_days": list(proto.half_lives_days)}
    tried: dict[str, dict[str, Any]] = {}

    def score(p: dict[str, Any]) -> float:
        key = json.dumps(p, sort_keys=True)
        if key not in tried:
            model = ev.fit_batch(log, val_lo, _params(p), _half_life_s(p))
            say(f"validation fit {p}: {model.fit_seconds:.1f}s")
            m = ev.prequential(log, val_lo, val_hi, model, val_cfg, val_sample, seed).metrics(k)
            tried[key] = {"params": dict(p), "fit_s": round(model.fit_seconds, 2), "metrics": m}
            say(f"  streaming {ndcg} {m['streaming'][ndcg]:.4f}, batch {m['batch'][ndcg]:.4f}")
        return float(tried[key]["metrics"]["streaming"][ndcg])

    for name, values in grid.items():
        best_value = max(values, key=lambda v: (score({**current, name: v}), v == current[name]))
        current = {**current, name: best_value}
    chosen_run = tried[json.dumps(current, sort_keys=True)]["metrics"]
    blend_name = {w: f"blend[w={w:g}]" for w in blends}
    best_blend = max(blends, key=lambda w: chosen_run[blend_name[w]][ndcg])
    say(f"chosen ALS {current}, blend weight {best_blend:g}")

    # 3. test: refit before the test window with the chosen parameters
    model = ev.fit_batch(log, test_lo, _params(current), _half_life_s(current))
    say(f"test refit: {model.fit_seconds:.1f}s")
    test_cfg = replace(base, trending=(best_trend,), blend_weights=(best_blend,))
    pre = ev.prequential(log, test_lo, test_hi, model, test_cfg, sample, seed, say)
    hits = {m: pre.hits(m) for m in pre.recs}
    bins = (pre.ts_ms - proto.test_start_ms) // proto.timeline_bin_ms
    timeline = {m: [float(h[bins == b].mean()) if (bins == b).any() else None for b in range(int(bins.max()) + 1)]
                for m, h in hits.items()} if len(bins) else {}
    test: dict[str, Any] = {"prequential": pre.metrics(k), "queries": len(pre.relevant)}
    # users the refit knows vs users whose first event came after it (cold start)
    known = model.known_users[pre.users]
    test["segments"] = {"known users": pre.metrics(k, known), "new users": pre.metrics(k, ~known)}
    # paired difference of per-query hits against trending, with a normal 95% interval
    diffs = {m: h.astype(float) - hits["trending"] for m, h in hits.items() if m != "trending"}
    test["paired_hr_vs_trending"] = {m: [float(d.mean()), float(1.96 * d.std(ddof=1) / np.sqrt(len(d)))]
                                     for m, d in diffs.items() if len(d) > 1}
    say("test: next-window evaluation")
    test["next_window"] = ev.next_window(log, test_lo, test_hi, model, test_cfg, sample, seed, say).metrics(k)
    if proto.report_other_exclusion:
        say(f"test: prequential with exclude_seen={not proto.exclude_seen}")
        other = replace(test_cfg, exclude_seen=not proto.exclude_seen)
        test["prequential_other_exclusion"] = ev.prequential(log, test_lo, test_hi, model, other, sample, seed,
                                                             say).metrics(k)
    say("done")
    return {
        "dataset": dataset, "source": ds.source, "citation": ds.citation, "event_type": ds.event_type,
        "events": len(log), "users": log.n_users, "items": log.n_items, "windows": proto.windows,
        "events_per_window": {"train": val_lo, "validation": val_hi - val_lo, "refit": test_lo,
                              "test": test_hi - test_lo},
        "k": k, "sample": sample, "val_sample": val_sample, "seed": seed, "exclude_seen": proto.exclude_seen,
        "replay": {key: val for key, val in asdict(base).items() if key not in ("trending", "blend_weights")},
        "weights": {"click": settings.click_weight, "purchase": settings.purchase_weight},
        "validation": {"trending": by_label, "als": list(tried.values()),
                       "blend": {f"{w:g}": chosen_run[blend_name[w]] for w in blends}},
        "chosen": {**current, "trending": best_trend.label, "trending_window": asdict(best_trend),
                   "blend_weight": best_blend},
        "test": test, "timeline": {"bin_ms": proto.timeline_bin_ms, "hit_rate": timeline},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec eval`` to the CLI."""
    p = sub.add_parser(
        "eval", help="offline evaluation on real data: trending vs batch vs streaming fold-in vs blend",
        description="Time split plus prequential replay (before each event, ask for the user's top k, then apply "
        "the event) on the Globo G1 clicks or The Complete Journey purchases. Parameters are chosen on a "
        "validation window and reported on a later test window. Needs `pip install 'streamrec[eval]'`; "
        "see docs/evaluation.md.")
    p.add_argument("--dataset", required=True, choices=sorted(protocols()))
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--sample", type=int, default=20_000,
                   help="test queries evaluated (fixed, seeded subset; every event is still applied)")
    p.add_argument("--val-sample", type=int, default=5_000, help="validation queries evaluated per candidate")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data-path", help="Globo clicks CSV (default ../shared/datasets/globo-g1-clicks/...)")
    p.add_argument("--out", type=Path, help="markdown report to update in place (e.g. docs/evaluation.md); the "
                   "plot goes to img/evaluation_<dataset>.png beside it")
    p.add_argument("--json", action="store_true", help="print the full result as JSON on stdout")
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ops.eval_report import render_text, write_report
    from streamrec.datasets import DatasetUnavailable

    if args.k < 1 or args.sample < 1 or args.val_sample < 1:
        print("streamrec: --k, --sample and --val-sample must be positive", file=sys.stderr)
        return 2
    if args.out is not None:
        try:
            import matplotlib  # noqa: F401  (fail now, not after minutes of replay)
        except ImportError:
            print("streamrec: --out needs matplotlib: pip install 'streamrec[eval]'", file=sys.stderr)
            return 1
    try:
        result = run_eval(args.dataset, settings, k=args.k, sample=args.sample, val_sample=args.val_sample,
                          seed=args.seed, data_path=args.data_path)
    except DatasetUnavailable as exc:
        print(f"streamrec: {exc}", file=sys.stderr)
        return 1
    result["command"] = (f"streamrec eval --dataset {args.dataset} --k {args.k} --sample {args.sample} "
                         f"--val-sample {args.val_sample} --seed {args.seed}"
                         + (f" --out {args.out}" if args.out is not None else ""))
    if args.out is not None:
        for path in write_report(result, args.out):
            print(f"[eval] wrote {path}", file=sys.stderr, flush=True)
    print(json.dumps(result) if args.json else render_text(result))
    return 0
