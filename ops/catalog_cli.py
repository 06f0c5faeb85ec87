"""``streamrec catalog import|bench``: the catalogue commands' command line (:mod:`ops.catalog_import`,
:mod:`ops.catalog_bench`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ops.catalog_import import SHOWN_REJECTS, ColumnMap, import_catalogue
from streamrec.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``streamrec catalog import`` to the CLI."""
    p = sub.add_parser("catalog", help="catalogue tools: import a whole catalogue from a file, or benchmark it")
    inner = p.add_subparsers(dest="catalog_command", required=True)
    imp = inner.add_parser("import", help="load a catalogue (CSV, JSON lines, Parquet) with a progress bar",
                           description="Checks every row like PUT /v1/items/{id}, writes the valid ones, reports "
                           "the rejected ones with reasons, and featurizes them with the serving model's content "
                           "model (docs/api.md#catalogue-content).")
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=["csv", "jsonl", "parquet"], default=None,
                     help="default: from the extension (.csv, .jsonl/.ndjson/.json, .parquet)")
    imp.add_argument("--id-column", default="item_id", help="column of the item id (default item_id)")
    imp.add_argument("--category-column", default="category", help="column of the category (default category)")
    imp.add_argument("--available-column", default="available", help="column of availability (default available)")
    imp.add_argument("--column", action="append", default=[], metavar="FILE_COLUMN=ATTRIBUTE",
                     help="store a column under another attribute name, e.g. product_name=title (repeatable)")
    imp.add_argument("--drop", action="append", default=[], metavar="COLUMN", help="leave a column out (repeatable)")
    imp.add_argument("--rejects", type=Path, default=None, help="write every rejected row (JSON lines) here")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)
    bench = inner.add_parser("bench", help="catalog import throughput on a synthetic catalogue (isolated prefix)")
    bench.add_argument("--items", type=int, default=50_000)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from ops.catalog_bench import run

    print(json.dumps(run(settings, items=args.items)))
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rename = dict(c.split("=", 1) for c in args.column)
    except ValueError:
        print("streamrec: catalog import: --column takes FILE_COLUMN=ATTRIBUTE", file=sys.stderr)
        return 2
    m = ColumnMap(args.id_column, args.category_column, args.available_column, rename, frozenset(args.drop))
    started = time.perf_counter()
    try:
        report = import_catalogue(settings, args.file, m, args.format, progress=not args.no_progress)
    except (OSError, ValueError) as exc:
        print(f"streamrec: catalog import: {exc}", file=sys.stderr)
        return 2
    summary = report.as_dict(time.perf_counter() - started)
    if args.rejects is not None:
        args.rejects.write_text("".join(json.dumps(r) + "\n" for r in report.rejects))
    if args.json:
        print(json.dumps({**summary, "first_rejects": report.rejects[:SHOWN_REJECTS]}))
    else:
        print(f"imported {summary['accepted']:,} of {summary['read']:,} rows in {summary['seconds']}s "
              f"({summary['items_per_s'] or 0:,} items/s); featurized {summary['featurized']:,}")
        for r in report.rejects[:SHOWN_REJECTS]:
            print(f"  rejected row {r['row']} ({r['id']!r}): {r['reason']}")
        if len(report.rejects) > SHOWN_REJECTS:
            print(f"  ... {len(report.rejects) - SHOWN_REJECTS:,} more rejected; by reason: "
                  f"{summary['rejected_by_reason']}")
    return 0 if report.accepted or not report.read else 1
