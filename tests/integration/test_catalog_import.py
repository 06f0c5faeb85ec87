"""``streamrec catalog import`` on real Redis: CSV, JSON lines and Parquet, column mapping, rejected rows with
reasons (the API's rules), and the command line's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ops.catalog_import import ColumnMap, import_catalogue
from streamrec.settings import Settings
from streamrec.store import RedisStore
from streamrec.store.catalog import get_item

ROOT = Path(__file__).resolve().parents[2]


def test_csv_with_column_mapping_and_rejected_rows(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.csv"
    path.write_text("sku,dept,product_name,price,in_stock,internal\n"
                    "a-1,shoes,Red runner,49.5,true,x\n"
                    ",shoes,No id,10,true,x\n"
                    "a-2,,Blue boot,,false,x\n"
                    "a-3,bad\x07dept,Bell,5,true,x\n")
    m = ColumnMap(id="sku", category="dept", available="in_stock", rename={"product_name": "title"},
                  drop=frozenset({"internal"}))
    report = import_catalogue(settings, path, m, progress=False)
    assert (report.read, report.accepted) == (4, 2)
    assert [(r["row"], r["reason"].split(":")[0]) for r in report.rejects] == [(2, "missing id (sku)"),
                                                                                 (4, "category")]
    store = RedisStore(settings)
    assert get_item(store, "a-1") == {"item_id": "a-1", "category": "shoes", "available": True, "title": "Red runner",
                                      "price": 49.5}
    assert get_item(store, "a-2") == {"item_id": "a-2", "category": None, "available": False, "title": "Blue boot"}
    store.close()


def test_json_lines_and_parquet(settings: Settings, tmp_path: Path) -> None:
    rows = [{"item_id": "j-1", "category": "tea", "title": "Green tea", "tags": "organic,loose", "price": 4},
            {"item_id": "j-2", "category": "tea", "spec": {"nested": 1}},
            {"item_id": "j-3", "category": "tea", "price": float("inf")}]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n")
    report = import_catalogue(settings, jsonl, ColumnMap(), progress=False)
    assert report.accepted == 1 and report.rejects[0]["id"] == "j-2"
    assert "flat" in report.rejects[0]["reason"]
    parquet = tmp_path / "items.parquet"
    pd.DataFrame([{"item_id": f"p-{n}", "category": "tea", "price": float(n)} for n in range(3)]).to_parquet(parquet)
    assert import_catalogue(settings, parquet, ColumnMap(), progress=False).accepted == 3
    store = RedisStore(settings)
    assert get_item(store, "j-1")["tags"] == "organic,loose"
    assert get_item(store, "p-2")["price"] == 2.0
    store.close()


def test_the_command_reports_rejects_and_writes_them(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("item_id,category\nok-1,books\n,books\n")
    rejects = tmp_path / "rejects.jsonl"
    env = {"STREAMREC_REDIS_URL": settings.redis_url, "STREAMREC_REDIS_PREFIX": settings.redis_prefix,
           "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "ops.cli", "catalog", "import", str(path), "--json", "--no-progress",
                          "--rejects", str(rejects)], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["accepted"], summary["rejected"]) == (1, 1)
    assert summary["rejected_by_reason"] == {"missing id (item_id)": 1}
    assert json.loads(rejects.read_text())["row"] == 2
    bad = subprocess.run([sys.executable, "-m", "ops.cli", "catalog", "import", str(tmp_path / "x.txt")],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "catalog import" in bad.stderr


def test_the_benchmark_imports_plain_then_featurized_and_leaves_nothing(settings: Settings) -> None:
    from ops.catalog_bench import run

    got = run(settings, items=300)
    assert got["plain"]["featurized"] == 0 and got["featurized"]["featurized"] == 300
    assert got["plain"]["items_per_s"] > 0 and got["featurized"]["items_per_s"] > 0
    assert got["prefix"] and not list(RedisStore(settings).client.scan_iter(f"{got['prefix']}:*", count=1000))
