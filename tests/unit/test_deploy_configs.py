"""deploy/: Prometheus's config and alert rules pass the real `promtool`, the alerts fire when (and only when)
they should, and the Grafana dashboard is one Grafana provisions: valid panels on the provisioned datasource,
PromQL that parses, and only metrics the code exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamrec.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamrec.yml"
RUNBOOK = REPO_ROOT / "docs" / "operations.md"
CODE_DIRS = ("streamrec", "stream_processors", "online_api", "batch", "ops")
# Grafana's variables, as Grafana substitutes them before sending a query.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$group": ".*"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: scripts/bootstrap.sh installs it (apt-get install prometheus)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [r for g in _yaml(ALERTS)["groups"] for r in g["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def _grafana_expr(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# ------------------------------------------------------------------------------------------ prometheus
def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (("check", "config", str(PROM_CONFIG)), ("check", "rules", str(ALERTS))):
        res = promtool(*args)
        assert res.returncode == 0, res.stdout + res.stderr
    assert _yaml(PROM_CONFIG)["rule_files"] == ["alerts.yml"]


def test_alerts_the_issue_asks_for_exist_with_a_runbook_entry() -> None:
    rules = {r["alert"]: r for r in _rules()}
    for name in ("StreamrecConsumerLagGrowing", "StreamrecFreshnessP99High", "StreamrecModelStale",
                 "StreamrecRefitsFailing", "StreamrecDeadLetterRateHigh", "StreamrecApiErrorRateHigh",
                 "StreamrecEventsNotApplicable"):
        assert name in rules, name
    assert rules["StreamrecConsumerLagGrowing"]["for"] == "5m"
    headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        doc, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert doc == "docs/operations.md" and anchor in headings, (name, anchor)


def _alert_test(tmp_path: Path, interval: str, series: dict[str, str],
                checks: list[tuple[str, str, list[dict[str, str]]]]) -> None:
    """Run `promtool test rules` on ``series``: each check is (eval time, alert, expected label sets).

    The rules are copied without annotations: promtool compares rendered annotations too, and those
    carry the value; what is tested here is when each alert fires and with which labels."""
    rules = _yaml(ALERTS)
    for g in rules["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    by_name = {r["alert"]: r for r in _rules()}
    test = {
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{
            "interval": interval,
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [
                {"eval_time": t, "alertname": a,
                 "exp_alerts": [{"exp_labels": {**by_name[a]["labels"], **labels}} for labels in exp]}
                for t, a, exp in checks
            ],
        }],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    res = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_lag_alerts_fire_on_a_growing_or_stalled_backlog_only(tmp_path: Path) -> None:
    grp = 'consumergroup="streamrec-worker"'
    _alert_test(tmp_path, "1m", {
        f'kafka_consumergroup_lag_sum{{{grp},topic="clicks"}}': "0+100x20",  # grows every minute
        f'kafka_consumergroup_lag_sum{{{grp},topic="purchases"}}': "500x20",  # large but steady
        f'kafka_consumergroup_status{{{grp}}}': "1x5 2x15",  # LAGGING, then STALLED from minute 6
    }, [
        ("4m", "StreamrecConsumerLagGrowing", []),  # growing, but not yet for 5 minutes
        ("10m", "StreamrecConsumerLagGrowing", [{"consumergroup": "streamrec-worker", "topic": "clicks"}]),
        ("5m", "StreamrecConsumerStalled", []),
        ("10m", "StreamrecConsumerStalled", [{"consumergroup": "streamrec-worker"}]),
    ])


def test_freshness_alert_fires_on_a_slow_p99_only(tmp_path: Path) -> None:
    # 100 events a minute; in the slow job 5% take 5-10 s, so p99 is above 5 s; the fast job stays under 1 s.
    series = {}
    for job, le_counts in {"slow": {"1": 90, "5": 95, "10": 100, "+Inf": 100},
                           "fast": {"1": 100, "5": 100, "10": 100, "+Inf": 100}}.items():
        for le, n in le_counts.items():
            series[f'streamrec_worker_freshness_seconds_bucket{{job="{job}",le="{le}"}}'] = f"0+{n}x30"
    _alert_test(tmp_path / "", "1m", {k: v for k, v in series.items() if 'job="fast"' in k},
                [("20m", "StreamrecFreshnessP99High", [])])
    _alert_test(tmp_path, "1m", {k: v for k, v in series.items() if 'job="slow"' in k},
                [("3m", "StreamrecFreshnessP99High", []), ("20m", "StreamrecFreshnessP99High", [{}])])


def test_dead_letter_and_api_error_alerts_fire_above_their_thresholds(tmp_path: Path) -> None:
    _alert_test(tmp_path, "1m", {
        'streamrec_worker_events_total{topic="clicks",type="click"}': "0+6000x40",
        'streamrec_worker_dead_letters_total{reason="invalid_json"}': "0+150x40",  # 2.4% of what came in
        'streamrec_api_request_duration_seconds_count{route="/v1/recommendations",status="200"}': "0+6000x40",
        'streamrec_api_request_duration_seconds_count{route="/v1/recommendations",status="503"}': "0+30x40",  # 0.5%
    }, [
        ("25m", "StreamrecDeadLetterRateHigh", [{}]),
        ("25m", "StreamrecApiErrorRateHigh", []),
    ])
    _alert_test(tmp_path, "1m", {
        'streamrec_worker_events_total{topic="clicks",type="click"}': "0+6000x40",
        'streamrec_worker_dead_letters_total{reason="invalid_json"}': "0+6x40",  # 0.1%
        'streamrec_api_request_duration_seconds_count{route="/v1/recommendations",status="200"}': "0+6000x40",
        'streamrec_api_request_duration_seconds_count{route="/v1/recommendations",status="500"}': "0+300x40",  # 5%
    }, [
        ("25m", "StreamrecDeadLetterRateHigh", []),
        ("25m", "StreamrecApiErrorRateHigh", [{}]),
    ])


def test_one_unappliable_event_alerts_and_invalid_ones_do_not(tmp_path: Path) -> None:
    _alert_test(tmp_path, "1m", {
        'streamrec_worker_events_total{topic="clicks",type="click"}': "0+6000x40",
        'streamrec_worker_dead_letters_total{reason="invalid_field"}': "0+6x40",
        'streamrec_worker_dead_letters_total{reason="apply_failed"}': "0x20 1x20",  # one poison event at 21m
    }, [
        ("15m", "StreamrecEventsNotApplicable", []),
        ("25m", "StreamrecEventsNotApplicable", [{}]),
        ("35m", "StreamrecEventsNotApplicable", []),  # gone once 10 minutes passed without another
    ])


def test_model_stale_alert_fires_on_the_age_of_the_model_served(tmp_path: Path) -> None:
    served = "streamrec_model_trained_timestamp_seconds"
    # By promtool's clock (5 min steps): "60x60" is a model trained at t=60 s and never replaced, so
    # `eval_time` old; "0+300x60" is one as new as the evaluation time (a refit just loaded).
    api1, api2 = {"job": "api", "instance": "api-1:8000"}, {"job": "api", "instance": "api-2:8000"}
    _alert_test(tmp_path, "5m", {
        f'{served}{{job="api",instance="api-1:8000"}}': "60x60",  # failed to load anything newer
        f'{served}{{job="api",instance="api-2:8000"}}': "0+300x60",  # serves each new refit
        # ... while the batch job succeeds all along: only the served age tells api-1 is stale.
        "streamrec_batch_last_success_timestamp_seconds": "0+300x60",
    }, [
        ("2h", "StreamrecModelStale", []),
        ("3h20m", "StreamrecModelStale", [api1]),
        ("3h20m", "StreamrecRefitsFailing", []),
    ])
    # A rollback at 2 h to a model trained at t=60 s: fresh until then, too old from 3 h on.
    _alert_test(tmp_path, "5m", {f'{served}{{job="api",instance="api-2:8000"}}': "0+300x23 60x40"}, [
        ("2h30m", "StreamrecModelStale", []),
        ("3h20m", "StreamrecModelStale", [api2]),
    ])
    # An API serving no model yet reports 0: not a stale model.
    _alert_test(tmp_path, "5m", {f'{served}{{job="api",instance="api-1:8000"}}': "0x60"}, [
        ("4h", "StreamrecModelStale", []),
    ])


def test_refits_failing_alert_fires_after_three_refit_intervals(tmp_path: Path) -> None:
    # The last refit succeeded at t=60 s and never again: by promtool's clock that was `eval_time` ago.
    _alert_test(tmp_path, "5m", {"streamrec_batch_last_success_timestamp_seconds": "60x60"}, [
        ("2h", "StreamrecRefitsFailing", []),
        ("3h20m", "StreamrecRefitsFailing", [{}]),
    ])
    # A batch process that restarted and has not succeeded yet reports 0: not a failing refit.
    _alert_test(tmp_path, "5m", {"streamrec_batch_last_success_timestamp_seconds": "0x60"}, [
        ("4h", "StreamrecRefitsFailing", []),
    ])


# ------------------------------------------------------------------------------------------ grafana
def test_datasource_and_dashboard_provisioning_match() -> None:
    ds = _yaml(DATASOURCES)
    assert ds["apiVersion"] == 1
    (prom,) = ds["datasources"]
    assert prom["type"] == "prometheus" and prom["uid"] and prom["url"] == "http://prometheus:9090"
    prov = _yaml(PROVIDERS)
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_dashboard_has_what_grafana_requires() -> None:
    dash = _dashboard()
    uid = _yaml(DATASOURCES)["datasources"][0]["uid"]
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dash["uid"]) and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["title"] and p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == uid, p["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def _dashboard_exprs() -> list[str]:
    return [_grafana_expr(t["expr"]) for p in _panels(_dashboard()) for t in p.get("targets", [])]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool parses PromQL when it checks rules: each query becomes a recording rule.
    exprs = _dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    res = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    for needed in ("kafka_consumergroup_lag", "kafka_consumergroup_lag_seconds", "streamrec_worker_events_total",
                   "streamrec_worker_freshness_seconds_bucket", "streamrec_api_request_duration_seconds_bucket",
                   "streamrec_api_recommendations_total", "streamrec_batch_last_success_timestamp_seconds",
                   "streamrec_worker_dead_letters_total", "streamrec_model_trained_timestamp_seconds"):
        assert needed in used, needed


# ------------------------------------------------------------------------------------------ names
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "le"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels, keywords or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {n for n in names if n.lower() not in _KEYWORDS}


def _code_text() -> str:
    parts = []
    for d in CODE_DIRS:
        parts.extend(p.read_text() for p in sorted((REPO_ROOT / d).rglob("*.py")))
    return "\n".join(parts)


def _exposed(name: str, code: str) -> bool:
    """True when the code registers a metric that Prometheus would expose as ``name``."""
    candidates = {name}
    for suffix in ("_bucket", "_count", "_sum", "_total", "_created", "_info"):
        if name.endswith(suffix):
            candidates.add(name[: -len(suffix)])
    return any(re.search(rf"[\"']{re.escape(c)}[\"']", code) for c in candidates)


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{status=~"5.."}[5m]))) '
            '/ on (job) group_left b_total > 3 * 3600 and time() - max(c) > 0')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_named_exists_in_the_code(source: str) -> None:
    exprs = _dashboard_exprs() if source == "dashboard" else [r["expr"] for r in _rules()]
    names = set().union(*(metric_names(e) for e in exprs)) - {"up"}  # `up` is Prometheus's own
    code = _code_text()
    missing = sorted(n for n in names if not _exposed(n, code))
    assert not missing, f"{source} uses metrics no process exposes: {missing}"
