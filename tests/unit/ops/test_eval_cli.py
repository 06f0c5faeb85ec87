"""`streamrec eval --events`: formats, timestamp detection, the JSON summary and --write-settings (small data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ops.eval_cli import parse_time
from streamrec.datasets import load_events, parse_columns, to_epoch_ms
from streamrec.ranking_settings import covis_config, ranking_config, settings_lines
from streamrec.settings import Settings

DAY_S = 86_400


def _frame(seed: int = 0, days: int = 6, per_day: int = 150) -> pd.DataFrame:
    """Users with a favourite pair of items they revisit, plus noise, over ``days`` days from 2024-01-01 UTC."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    ts = 1_704_067_200 + np.sort(rng.integers(0, days * DAY_S, n))
    user = rng.integers(0, 25, n)
    item = np.where(rng.random(n) < 0.6, (user % 5) * 2 + rng.integers(0, 2, n), rng.integers(0, 30, n))
    kind = np.where(rng.random(n) < 0.2, "purchase", "click")
    return pd.DataFrame({"when": ts, "who": [f"u{u}" for u in user], "what": [f"i{i}" for i in item],
                         "kind": kind})


def test_timestamps_in_seconds_milliseconds_and_iso_agree() -> None:
    secs = pd.Series([1_704_067_200, 1_704_067_260])
    expected = [1_704_067_200_000, 1_704_067_260_000]
    assert to_epoch_ms(secs).tolist() == expected
    assert to_epoch_ms(secs * 1000).tolist() == expected
    assert to_epoch_ms(pd.Series(["2024-01-01T00:00:00Z", "2024-01-01T01:01:00+01:00"])).tolist() == expected
    assert parse_time("2024-01-01") == expected[0] and parse_time("1704067200") == expected[0]


@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet", "jsonl"])
def test_every_format_loads_the_same_log(tmp_path: Path, suffix: str) -> None:
    frame = _frame()
    path = tmp_path / f"events.{suffix}"
    if suffix == "parquet":
        frame.to_parquet(path)
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)
    log = load_events(path, parse_columns("ts=when,user=who,item=what,type=kind")).log
    assert len(log) == len(frame) and log.n_users == frame["who"].nunique()
    assert log.purchase is not None and int(log.purchase.sum()) == int((frame["kind"] == "purchase").sum())
    assert np.all(np.diff(log.ts_ms) >= 0) and log.ts_ms[0] == frame["when"].min() * 1000


def test_type_column_values_map_to_registry_types_and_weights(tmp_path: Path) -> None:
    kinds = ["View", "addtocart", "add-to-cart", "transaction", "purchase", "click", "like"]
    frame = pd.DataFrame({"when": range(1_700_000_000, 1_700_000_000 + len(kinds)), "who": ["u"] * len(kinds),
                          "what": [f"i{k}" for k in range(len(kinds))], "kind": kinds})
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    ds = load_events(path, parse_columns("ts=when,user=who,item=what,type=kind"))
    assert ds.log.weight.tolist() == [0.5, 3.0, 3.0, 5.0, 5.0, 1.0, 1.0]  # the registry's default weights
    assert ds.log.purchase is not None and ds.log.purchase.tolist() == [False, False, False, True, True, False, False]
    assert ds.event_type == "view, click, add_to_cart and purchase"


def test_column_mapping_needs_ts_user_and_item() -> None:
    with pytest.raises(ValueError, match="item"):
        parse_columns("ts=a,user=b")
    with pytest.raises(ValueError, match="ROLE"):
        parse_columns("ts=a,user=b,item=c,colour=d")


def test_written_settings_read_back_as_the_same_configuration(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base = Settings()
    rank = ranking_config(base).__class__(personal=0.25, repeat=2.0, exclude_seen=False, repeat_half_life_s=None)
    covis = covis_config(base).__class__(max_prev=7, half_life_s=3_600.0)
    for line in settings_lines(rank, covis):
        if not line.startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("STREAMREC_REPEAT_HALF_LIFE_S", raising=False)
    again = Settings()
    assert again.repeat_half_life_s == base.repeat_half_life_s  # unset lines leave the default
    assert ranking_config(again).__class__(**{**ranking_config(again).__dict__, "repeat_half_life_s": None}) == rank
    assert covis_config(again) == covis


def test_defaults_of_the_ranking_dataclasses_are_the_settings_defaults() -> None:
    from models.covisitation import CovisConfig
    from models.ranking import RankingConfig

    assert ranking_config(Settings()) == RankingConfig()
    assert covis_config(Settings()) == CovisConfig()


def test_eval_on_an_event_file_prints_every_method_and_writes_settings(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    path = tmp_path / "events.csv"
    _frame(per_day=120).to_csv(path, index=False)
    env = tmp_path / "chosen.env"
    code = main(["eval", "--events", str(path), "--columns", "ts=when,user=who,item=what,type=kind",
                 "--validate-from", "2024-01-04", "--test-from", "2024-01-05", "--test-until", "2024-01-07",
                 "--sample", "60", "--val-sample", "40", "--json", "--write-settings", str(env)])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["k"] == 10 and out["queries"] > 0
    assert list(out["methods"]) == ["trending", "popular", "personal_frequency", "covisitation", "als_batch",
                                    "als_streaming", "hybrid"]
    assert all(set(m) == {"hr", "ndcg", "recall", "map"} and 0 <= m["ndcg"] <= 1 for m in out["methods"].values())
    lines = env.read_text().splitlines()
    assert f"STREAMREC_RANK_WEIGHT_REPEAT={out['chosen']['hybrid']['repeat']:g}" in lines
    assert "STREAMREC_RANK_EXCLUDE_SEEN=true" in lines


def test_a_learned_ranker_is_written_beside_the_settings_and_loads_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from models.covisitation import CovisConfig
    from models.learned_ranker import FEATURES, Query, fit_ranker
    from models.ranking import RankingConfig
    from online_api.hybrid_service import load_ranker
    from ops.eval_cli import write_settings

    rng = np.random.default_rng(1)
    rows = [rng.random((20, len(FEATURES))) for _ in range(30)]
    ranker = fit_ranker([Query(x, x[:, 0] > 0.8) for x in rows], 10, threads=1)
    from dataclasses import asdict

    result = {"dataset": "x", "exclude_seen": False, "k": 10, "test": {"hybrid": {"ndcg@10": 0.5}},
              "chosen": {"hybrid": asdict(RankingConfig()), "covisitation": asdict(CovisConfig()),
                         "trending_label": "1h"}, "ranker_text": ranker.to_text()}
    env = tmp_path / "shop.env"
    write_settings(result, env)
    line = next(x for x in env.read_text().splitlines() if x.startswith("STREAMREC_RANK_MODEL_FILE="))
    monkeypatch.setenv(*line.split("=", 1))
    loaded = load_ranker(Settings().rank_model_file)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.score(rows[0]), ranker.score(rows[0]))
