"""Render docs/reliability.md from test-results/reliability.json (``python -m tests.reliability.report``).

``make reliability`` runs it after the suite, so the document holds the figures of that one run. It exits
non-zero (and writes nothing) when a scenario is missing, a test did not pass, or a figure shows a loss, a
double application or a 5xx.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from streamrec.settings import REPO_ROOT
from tests.reliability.record import RESULTS

DOC = REPO_ROOT / "docs" / "reliability.md"
SCENARIOS = ["worker_crash", "kafka_restart", "redis_restart", "redis_flushall_rebuild", "batch_killed_mid_publish",
             "hostile_input", "poison_events", "shutdown_while_retrying", "security_keys_and_binding",
             "security_secrets", "soak", "redis_cluster_worker_crash", "redis_cluster_failover"]


def codes(status: dict[str, int]) -> str:
    return ", ".join(f"{n:,}× {c}" for c, n in sorted(status.items())) or "—"


def n5xx(status: dict[str, int]) -> int:
    return sum(n for c, n in status.items() if c.startswith("5"))


def rss(figures: dict[str, Any], *names: str) -> str:
    mem = figures.get("rss") or figures.get("memory") or {}
    parts = []
    for name in names or sorted(mem):
        m = mem.get(name)
        if m:
            parts.append(f"{name} {m['start_mb']:.0f} → {m['end_mb']:.0f} MB")
    return "; ".join(parts) or "—"


def problems(data: dict[str, Any]) -> list[str]:
    """Why these results cannot be published (empty when they can)."""
    found = [f"scenario {name} did not record figures" for name in SCENARIOS if name not in data["scenarios"]]
    found += [f"{test} {t['outcome']}" for test, t in data["tests"].items() if t["outcome"] != "passed"]
    sc = data["scenarios"]
    for name in ("worker_crash", "kafka_restart", "redis_restart", "soak", "redis_cluster_worker_crash",
                 "redis_cluster_failover"):
        f = sc.get(name, {})
        if f.get("lost") or f.get("doubled"):
            found.append(f"{name}: lost {f.get('lost')} doubled {f.get('doubled')}")
    after = sc.get("redis_flushall_rebuild", {}).get("after_rebuild", {})
    if after.get("lost") or after.get("doubled"):
        found.append(f"after rebuild: lost {after.get('lost')} doubled {after.get('doubled')}")
    if sc.get("kafka_restart", {}).get("lost_202"):
        found.append("kafka_restart: events answered 202 were lost")
    for name, key in (("worker_crash", "reads"), ("kafka_restart", "requests"), ("batch_killed_mid_publish", "reads"),
                      ("soak", "requests")):
        status = sc.get(name, {}).get(key, {}).get("status", {})
        if n5xx(status) and not (name == "kafka_restart" and set(status) - {"200", "202", "503"} == set()):
            found.append(f"{name}: 5xx answers {status}")
    failover = sc.get("redis_cluster_failover", {})
    if failover.get("api_500") or set(failover.get("reads", {}).get("status", {})) - {"200", "503"}:
        found.append(f"redis_cluster_failover: {failover.get('api_500')} × 500, reads "
                     f"{failover.get('reads', {}).get('status')}")
    if n5xx(sc.get("redis_cluster_worker_crash", {}).get("reads", {}).get("status", {})):
        found.append("redis_cluster_worker_crash: 5xx answers")
    return found


def cluster_rows(sc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The summary rows of the Redis Cluster scenarios."""
    cw, cf = sc["redis_cluster_worker_crash"], sc["redis_cluster_failover"]
    return [
        (f"Redis Cluster: worker SIGKILLed {len(cw['kills'])}× under load", f"{cw['events_sent']:,}",
         f"{cw['applied']:,}", cw["lost"], cw["doubled"], codes(cw["reads"]["status"]), n5xx(cw["reads"]["status"]),
         "—"),
        ("Redis Cluster: a master SIGKILLed under load, its replica took over", f"{cf['events_sent']:,}",
         f"{cf['applied']:,}", cf["lost"], cf["doubled"], codes(cf["reads"]["status"]),
         f"{n5xx(cf['reads']['status'])} (503 while the slot was unavailable; {cf['api_500']} × 500)", "—"),
    ]


def cluster_section(cw: dict[str, Any], cf: dict[str, Any]) -> list[str]:
    """The Redis Cluster scenarios: a private cluster of 3 masters with 1 replica each."""
    probe = cf["probe"]
    return load_section("Redis Cluster: worker crash and master failover", cf, [
        "A private Redis Cluster (3 masters, 1 replica each, `redis-server` from the system, own ports and data "
        f"directory), the shared Kafka, {cf['load']['partitions']} partitions.",
        f"- worker crash: {cw['load']['rate']:,} events/s for {cw['load']['duration_s']:g} s; the worker was "
        f"SIGKILLed {len(cw['kills'])} times and a new one applied events again "
        + ", ".join(f"{x['resumed_after_s']} s" for x in cw["kills"])
        + f" after each kill: {cw['events_delivered']:,} delivered, {cw['applied']:,} applied, **lost "
        f"{cw['lost']}, doubled {cw['doubled']}**; reads {codes(cw['reads']['status'])}.",
        f"- master failover: {cf['load']['rate']:,} events/s and {cf['load']['reads_rps']} reads/s; the "
        f"`redis-server` of the master on port {cf['redis_master_port']} (the slots of partitions "
        f"{', '.join(str(p) for p in cf['partitions_on_master'])}) was SIGKILLed mid-stream. Its replica "
        f"(port {cf['promoted_replica_port']}) served the slot with `cluster_state:ok` {cf['failover_s']} s later.",
        f"- the API (not restarted) answered **503, never 500** while the slot was unavailable and 200 again "
        f"**{cf['api_200_again_after_kill_s']} s** after the kill: a probe of the failed slot's users "
        f"{codes(probe['status'])}; the read load {codes(cf['reads']['status'])} ({cf['api_503']} × 503, "
        f"{cf['api_500']} × 500 in all), transport errors {cf['reads']['errors'] or 0}.",
        f"- the worker (not restarted) retried with backoff ({cf['worker_infrastructure_retries']:g} "
        f"infrastructure retries), applied the failed partitions' events again "
        f"{cf['worker_resumed_after_kill_s']} s after the kill and had applied every event produced until the "
        f"failover {cf['worker_caught_up_after_kill_s']} s after it: {cf['events_delivered']:,} delivered, "
        f"{cf['applied']:,} applied, **lost {cf['lost']}, doubled {cf['doubled']}**.",
    ])


def section_summary(sc: dict[str, Any]) -> list[str]:
    w, k, r, fb, b, soak = (sc[n] for n in ("worker_crash", "kafka_restart", "redis_restart",
                                            "redis_flushall_rebuild", "batch_killed_mid_publish", "soak"))
    h = sc["hostile_input"]
    after = fb["after_rebuild"]
    rows = [
        ("Worker SIGKILLed 3× under load", f"{w['events_sent']:,}", f"{w['applied']:,}", w["lost"], w["doubled"],
         codes(w["reads"]["status"]), n5xx(w["reads"]["status"]), rss(w, "api", "worker-3")),
        ("Kafka stopped and restarted under load", f"{k['events_in_kafka']:,} in Kafka "
         f"({k['events_answered_202']:,} answered 202)", f"{k['applied']:,}", k["lost"] + k["lost_202"], k["doubled"],
         codes(k["requests"]["status"]), f"{n5xx(k['requests']['status'])} (all 503 from the collector while "
         "Kafka was down; 0 × 500)", rss(k)),
        ("Redis SIGKILLed and restarted (AOF) under load", f"{r['events_sent']:,}", f"{r['applied']:,}", r["lost"],
         r["doubled"], codes(r["reads"]["status"]), f"{n5xx(r['reads']['status'])} (503 while Redis was down; "
         "0 × 500)", rss(r, "api", "worker")),
        ("Redis FLUSHALL, `streamrec rebuild`, worker restarted from offset 0", f"{after['produced']:,}",
         f"{after['applied']:,}", after["lost"], after["doubled"], "—", 0, rss(r, "worker-2")),
        ("Batch SIGKILLed mid-publish, next run", "—", "—", "—", "—", codes(b["reads"]["status"]),
         n5xx(b["reads"]["status"]), rss(b)),
        ("Hostile input (HTTP and raw Kafka records)", f"{h['flood']['events_sent']:,} (flood)",
         f"{h['flood']['applied']:,}", h["flood"]["events_sent"] - h["flood"]["applied"], 0,
         codes({str(c): sum(1 for v in h["requests"].values() if v == c) for c in set(h["requests"].values())}),
         0, "—"),
        (f"Soak {soak['duration_s'] / 60:g} min: {soak['events_rate']:,.0f} events/s + {soak['requests']['rps']:,.0f} "
         "requests/s", f"{soak['events_sent'] + soak['collector_events_accepted']:,}", f"{soak['applied']:,}",
         soak["lost"], soak["doubled"], codes(soak["requests"]["status"]), n5xx(soak["requests"]["status"]),
         rss(soak, "worker", "api")),
    ]
    rows += cluster_rows(sc)
    out = ["| scenario | events sent | applied | lost | doubled | requests (status) | 5xx | RSS start → end |",
           "|---|---|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def command(text: str) -> str:
    """A recorded command as one runs it from the repository root."""
    return text.replace("pytest ", ".venv/bin/pytest ", 1)


def load_section(title: str, f: dict[str, Any], lines: list[str]) -> list[str]:
    return [f"### {title}", "", *lines, "", f"Reproduce: `{command(f['command'])}`", ""]


def poison_section(p: dict[str, Any], stop: dict[str, Any]) -> list[str]:
    """Poison events: isolated and dead-lettered, the partition moving on; a bounded stop while retrying."""
    return load_section("Poison events", p, [
        f"{p['poison_records']} poison records written straight to Kafka ahead of {p['good_events']} good events "
        "in the same partitions: the record that once stalled every partition for good (a lone UTF-16 surrogate "
        "in `context.category`, now refused by the contract) and an event that passes validation but cannot be "
        "applied (its user's stored history is corrupt). Dead letters: "
        + ", ".join(f"{k} → `{v}`" for k, v in sorted(p["dead_letters"].items()))
        + f"; `streamrec_worker_dead_letters_total{{reason=\"apply_failed\"}}` = {p['apply_failed_metric']:g}. "
        f"From the poison records' arrival to all {p['good_events']} good events applied exactly once: "
        f"**{p['seconds_from_poison_to_all_good_applied']} s**.",
        "",
        f"SIGTERM while the worker retried a batch (Redis unreachable): it exited after {stop['seconds_to_exit']} s "
        f"(grace period `STREAMREC_WORKER_SHUTDOWN_GRACE_S` = {stop['grace_s']:g} s in the test), nothing written.",
    ])


def latency(req: dict[str, Any]) -> str:
    return "; ".join(f"{kind} p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms" for kind, v in sorted(req["latency"].items()))


def render(data: dict[str, Any]) -> str:
    sc = data["scenarios"]
    run = data["run"]
    w, k, r, fb, b = (sc[n] for n in ("worker_crash", "kafka_restart", "redis_restart", "redis_flushall_rebuild",
                                      "batch_killed_mid_publish"))
    h, sk, ss, soak = sc["hostile_input"], sc["security_keys_and_binding"], sc["security_secrets"], sc["soak"]
    out = [
        "# Reliability: faults, load and hostile input",
        "",
        "<!-- Generated by `python -m tests.reliability.report` from test-results/reliability.json, written by",
        "     `make reliability`. Do not edit by hand: run `make reliability` again. -->",
        "",
        "`make reliability` starts the local stack and runs the scenarios below against real processes: "
        "`streamrec worker`, the API under uvicorn, `streamrec batch run`, real Kafka and Redis. Scenarios that "
        "stop or wipe Kafka or Redis get a private stack of their own (own data directory, free ports); the "
        "others use the shared stack with their own topics, consumer group and Redis prefix. Load comes from "
        "separate processes: a confluent-kafka producer for events and an open-loop asyncio HTTP client for "
        "requests (`tests/reliability/load.py`). Every figure below comes from one run:",
        "",
        f"- run started {run['started']}, finished {run['updated']} on {run['host']['system']}, "
        f"{run['host']['cpus']} CPUs, Python {run['host']['python']};",
        f"- {len(data['tests'])} tests, all passed (list at the end); the soak ran {soak['duration_s'] / 60:g} "
        "minutes (`STREAMREC_SOAK_S`, default 600).",
        "",
        "*Lost* counts events produced (acknowledged by Kafka, or answered 202 by the collector) that are not "
        "applied; *doubled* counts applications beyond one per event; both compare, per user, the events "
        "produced with the user's applied-event count in Redis (`<prefix>:{p<n>}:user_events`).",
        "",
        "## Summary",
        "",
        *section_summary(sc),
        "",
        "## Scenarios",
        "",
    ]
    out += load_section("Worker crash: SIGKILL under load", w, [
        f"{w['load']['rate']:,} events/s for {w['load']['duration_s']:g} s ({w['users']:,} users) straight to Kafka; "
        f"the worker was SIGKILLed {len(w['kills'])} times mid-stream and a new one started each time "
        f"({w['worker_processes']} worker processes in all). The new worker applied events again "
        + ", ".join(f"{x['resumed_after_s']} s" for x in w["kills"])
        + " after each kill (the dead member's session timeout, 6 s here, then a rebalance).",
        f"- events sent {w['events_sent']:,}, delivered {w['events_delivered']:,}, applied {w['applied']:,}: "
        f"**lost {w['lost']}, doubled {w['doubled']}** ({w['users_off']} users off); histories of the wrong "
        f"length: {w['histories_wrong_length']}; the workers' per-batch stats sum to "
        f"{w['applied_by_worker_stats']:,}.",
        f"- {w['vectors']['checked']} sampled user vectors equal the fold-in of the user's history in Redis "
        f"(max relative error {w['vectors']['max_rel_error']:.1e}).",
        f"- reads during the crashes: {codes(w['reads']['status'])}; {latency(w['reads'])}; transport errors "
        f"{w['reads']['errors'] or 0}.",
        f"- RSS: {rss(w)}.",
    ])
    out += load_section("Kafka stopped and restarted under load", k, [
        f"The collector took {k['requests']['rps']:.0f} requests/s (single events and batches of 10, plus "
        f"recommendation reads) while Kafka was stopped (SIGTERM) for {k['kafka_down_s']} s and started again.",
        f"- requests: {codes(k['requests']['status'])}; per kind: "
        + "; ".join(f"{kind} {codes(v)}" for kind, v in sorted(k["requests"]["status_by_kind"].items()))
        + ". The collector answered **503 with Retry-After, never 500**, while Kafka was away, and accepted "
        f"events again {k['collector_first_202_after_restart_s']} s after Kafka was back, by itself.",
        f"- events answered 202: {k['events_answered_202']:,}, all in Kafka (**lost: {k['lost_202']}**); "
        f"answered 503: {k['events_answered_503']:,} ({k['events_503_found_in_kafka']} of them reached Kafka "
        "anyway, which a client retry with the same event id makes harmless).",
        f"- the same worker process (never restarted) applied every event in Kafka: {k['applied']:,} applied, "
        f"**lost {k['lost']}, doubled {k['doubled']}**; it finished {k['worker_drain_after_load_s']} s after the "
        "load ended.",
        f"- transport errors or hangs: {k['requests']['errors'] or 0}; {latency(k['requests'])} (the slowest "
        "event posts waited for the produce timeout, 3 s here, before their 503).",
        f"- RSS: {rss(k)}.",
    ])
    out += load_section("Redis SIGKILLed and restarted (AOF on) under load", r, [
        f"Events at 1,000/s to Kafka and 100 reads/s; Redis was SIGKILLed and restarted {r['redis_down_s']} s "
        "later, reloading its append-only file.",
        f"- reads: {codes(r['reads']['status'])}; per kind: "
        + "; ".join(f"{kind} {codes(v)}" for kind, v in sorted(r["reads"]["status_by_kind"].items()))
        + f". 503 while Redis was away (similar items are served from memory); `/readyz` was 200 again "
        f"{r['api_ready_after_redis_up_s']} s after Redis came back, without a restart.",
        f"- the worker retried with backoff ({r['worker_infrastructure_retries']:g} infrastructure retries) and "
        f"applied events again {r['worker_applying_after_redis_up_s']} s after Redis was back, without a restart: "
        f"{r['events_sent']:,} events sent, {r['applied']:,} applied, **lost {r['lost']}, doubled "
        f"{r['doubled']}** (acknowledged transactions survive a Redis crash in the AOF).",
        f"- RSS: {rss(r, 'api', 'worker')}.",
    ])
    rb = fb["rebuild_summary"]
    after = fb["after_rebuild"]
    out += load_section("Redis loses everything (FLUSHALL), then `streamrec rebuild`", fb, [
        f"Workers stopped, `FLUSHALL`, then `{fb['rebuild_command']}`. It refitted the model from the batch "
        f"snapshot and Kafka ({rb['refit']['read']:,} events read past the snapshot; version "
        f"{fb['model_before']} → {fb['model_after']}) and replayed {rb['replay']['records']:,} records through "
        f"the worker's core in {rb['replay']['seconds']} s; {fb['rebuild_s']} s in all.",
        f"- compared with the state before the flush, for {fb['users_compared']:,} users: event counts, applied "
        "offsets, all-time popular scores, the 1-hour trending list and the catalogue are equal "
        f"(differences: {json.dumps(fb['differences'])}); histories are identical for "
        f"{fb['histories_identical']:,} users and equal up to how clicks and purchases interleave for "
        f"{fb['histories_same_up_to_click_purchase_interleaving']:,} (see the design notes below).",
        f"- {fb['vectors']['checked']} sampled vectors equal the fold-in of the rebuilt histories against the "
        f"rebuilt model (max relative error {fb['vectors']['max_rel_error']:.1e}, {fb['vectors']['missing']} "
        "missing).",
        f"- the API kept answering during the flush (status {fb['api_during_flush_status']}) and served the "
        f"rebuilt model {fb['api_serving_rebuilt_model_after_s']} s after the rebuild, by itself "
        f"(personalised: {fb['api_personalized']}).",
        f"- a worker restarted **from offset 0** (its Kafka consumer group deleted) skipped "
        f"{after['redelivered_skipped']:,.0f} already applied events and applied the {after['events_sent_after']:,} "
        f"new ones: {after['applied']:,} applied for {after['produced']:,} produced, **lost {after['lost']}, "
        f"doubled {after['doubled']}**.",
    ])
    out += cluster_section(sc["redis_cluster_worker_crash"], sc["redis_cluster_failover"])
    attempt = b["kill_attempts"][-1]
    partial = next(iter(attempt["partial_versions"].values()))
    out += load_section("Batch killed mid-publish", b, [
        f"{b['events']:,} events; the first run published {b['first_run']['version']} "
        f"({b['first_run']['n_users']:,} users × {b['first_run']['n_items']:,} items, publish "
        f"{b['first_run']['publish_s']} s). The second run was SIGKILLed {attempt['kill_after_publishing_s']} s "
        f"after it started publishing, with {partial['users_written']:,} user vectors of its version written "
        f"(keys: {', '.join(partial['parts'])}; no `meta`, never activated).",
        f"- the previous version kept serving: current {b['current_after_kill']}, the API served "
        f"{b['api_serving_after_kill']}; reads throughout: {codes(b['reads']['status'])}, errors "
        f"{b['reads']['errors'] or 0}.",
        f"- the next run succeeded and published {b['next_run']['version']} in {b['next_run']['total_s']} s; it "
        f"removed the abandoned version ({b['next_run'].get('abandoned_versions_removed')}); the API served the "
        f"new version {b['api_switched_after_s']} s later. Half-written versions left: "
        f"{len(b['partial_versions_after_next_run'])}.",
    ])
    req_codes: dict[int | None, list[str]] = {}
    for name, code in h["requests"].items():
        req_codes.setdefault(code, []).append(name)
    out += load_section("Hostile input", h, [
        "Through the API (each request on its own; none may answer 5xx, hang, or crash the server):",
        "",
        "| status | requests |",
        "|---|---|",
        *(f"| {code} | {', '.join(sorted(names))} |" for code, names in sorted(req_codes.items(),
                                                                               key=lambda x: x[0] or 0)),
        "",
        f"A flood of one user's events: {h['flood']['events_sent']:,} events in "
        f"{sum(h['flood']['requests'].values())} batches ({codes(h['flood']['requests'])}), all applied once "
        f"({h['flood']['applied']:,}), history capped at {h['flood']['history_length']} "
        f"(`history_cap`={h['flood']['history_cap']}).",
        "",
        "Poison records written straight to Kafka, each dead-lettered with its reason while the worker kept "
        "going (a valid event after them was applied: "
        f"{h['valid_event_after_poison_applied']}): "
        + ", ".join(f"{name} → `{reason}`" for name, reason in sorted(h["dead_letters"].items())) + ".",
        "",
        f"Worker alive: {h['worker_alive']}; API alive: {h['api_alive']}; unexpected errors in the API log: "
        f"{h['api_unexpected_errors_logged']}. Property-based tests (hypothesis, "
        "`tests/unit/streamrec/test_events_properties.py`) check that `decode_event` raises nothing but "
        "`InvalidEvent` on arbitrary bytes, arbitrary JSON and any value in any field, and that every valid event "
        "round-trips unchanged; schemathesis (`tests/integration/test_api_schemathesis.py`) fuzzes every "
        "operation of the OpenAPI with valid and invalid requests and finds no 5xx.",
    ])
    out += poison_section(sc["poison_events"], sc["shutdown_while_retrying"])
    m = sk["write_endpoints"]
    out += load_section("Security", sk, [
        "API keys on the write endpoints (`streamrec api` started as an operator would, default host):",
        "",
        "| key sent | " + " | ".join(m["right"]) + " |",
        "|---|" + "---|" * len(m["right"]),
        *(f"| {name} | " + " | ".join(str(v) for v in m[name].values()) + " |" for name in
          ("none", "empty", "wrong", "prefix", "longer", "upper", "right")),
        "",
        f"With `STREAMREC_API_READ_KEYS_REQUIRED=true`, reads answer {json.dumps(sk['reads_with_keys_required'])}.",
        "",
        "Listening sockets (from /proc): "
        + "; ".join(f"{name}: {', '.join(v)}" for name, v in sorted(sk["listening_sockets"].items()))
        + " — loopback only.",
        "",
        f"Secrets: with the API keys in `STREAMREC_API_KEYS` and a password in `STREAMREC_REDIS_URL` (a private "
        f"Redis with `requirepass`), {ss['responses_checked']} responses (docs, OpenAPI, metrics, storefront "
        "config, errors for missing and wrong keys) and the logs of the API (debug, access log on) and the worker "
        f"(debug) were searched: leaks {json.dumps(ss['leaks'])}.",
    ])
    mem = soak["memory"]
    lag = soak["lag"]
    out += load_section(f"Soak: {soak['duration_s'] / 60:g} minutes", soak, [
        f"{soak['events_rate']:,.0f} events/s produced to Kafka and {soak['requests']['rps']:,.0f} requests/s "
        "(80% recommendations, 10% similar items, 5% trending, 5% events through the collector) on loopback, "
        "one worker, one API process, 2 cores shared with Kafka, Redis and the load generators.",
        f"- events: {soak['events_sent']:,} to Kafka + {soak['collector_events_accepted']:,} through the "
        f"collector, {soak['applied']:,} applied: **lost {soak['lost']}, doubled {soak['doubled']}**; dead "
        f"letters {soak['worker_dead_letters']:g}; worker retries {json.dumps(soak['worker_retries'])}.",
        f"- requests: {codes(soak['requests']['status'])}; transport errors {soak['requests']['errors'] or 0}; "
        f"{latency(soak['requests'])} (client side, on a machine at full load).",
        f"- lag, sampled every 10 s ({lag['samples']} samples): at most {lag['max_lag_messages']:,} messages "
        f"behind Kafka's committed offsets, oldest unprocessed event at most {lag['max_lag_s']:.1f} s old; at most "
        f"{lag['max_applied_lag_messages']:,} events not yet applied in Redis; drained "
        f"{soak['drain_after_load_s']} s after the load stopped. Freshness (worker histogram): p50 ≤ "
        f"{soak['freshness_p50_s_bucket']} s, p99 ≤ {soak['freshness_p99_s_bucket']} s.",
        "- CPU, % of one core: " + ", ".join(f"{n} {v}" for n, v in soak["cpu_percent_of_one_core"].items()) + ".",
        "",
        f"Memory (RSS, sampled every 10 s; median of the window {soak['memory_windows_s']['early']} s vs "
        f"{soak['memory_windows_s']['late']} s):",
        "",
        "| process | start | early median | late median | end | growth |",
        "|---|---|---|---|---|---|",
        *(f"| {name} | {v['start_mb']:.0f} MB | {v['early_median_mb']:.0f} MB | {v['late_median_mb']:.0f} MB | "
          f"{v['end_mb']:.0f} MB | {v['growth'] * 100:+.1f}% |" for name, v in mem.items()
          if v["early_median_mb"] and v["late_median_mb"]),
        "",
        "The worker and the API must stay within +10% (they do); Redis grows with its data by design (an hour "
        "of event ids for de-duplication, histories filling up to `history_cap`), Kafka's heap is fixed.",
    ])
    out += DESIGN.splitlines()
    out += ["", "## Tests of this run", "", "| test | outcome | seconds |", "|---|---|---|"]
    out += [f"| `{name}` | {t['outcome']} | {t['seconds']} |" for name, t in sorted(data["tests"].items())]
    return "\n".join(out) + "\n"


DESIGN = """
## Restoring Redis: `streamrec rebuild`

Redis holds nothing that cannot be recomputed from the event log except the catalogue: model versions
come from refits of the event topics, and every user's state (history, counts, vector, trending
contributions, de-duplication marks, applied offsets) is a fold of the events. `streamrec rebuild`
(`ops/rebuild.py`) recomputes it after Redis lost its data:

1. **Preconditions.** Kafka and Redis answer; the worker group has no members (stop every `streamrec
   worker`: a worker writing during the replay would interleave with it). If Redis still holds applied
   offsets, the user state is there and the rebuild refuses; `--force` wipes the user state (histories,
   counts, offsets, fences, de-duplication, trending, popular, new-item state; not the catalogue or the
   model) and recomputes it.
2. **Model.** When no complete current version is left (or with `--refit`), it runs the batch refit:
   the local snapshot (`STREAMREC_BATCH_SNAPSHOT_DIR`) covers the events up to its offsets, the refit reads
   the rest from Kafka, fits and publishes a new version atomically. The lost version's factors are not
   recoverable; the refit on the same events is its equivalent. Without a snapshot it reads the topics
   from the beginning.
3. **User state.** It takes the end offsets of both event topics, then feeds every record from the log
   start up to them, in batches, to the streaming worker's own core (`BatchProcessor`, no consumer group):
   histories (capped), event counts, trending and popular counts, de-duplication marks, new items, each
   user's vector folded against the current version, and the applied offset per partition, all in the
   worker's MULTI/EXEC transactions. Invalid records are counted, not dead-lettered again.
4. **Catalogue.** It is not in Kafka; `--catalog FILE` (JSON lines or a JSON array of `{item_id,
   category, available, ...}`) restores it, otherwise its owner sends it again (`PUT /v1/items/{id}`).

Restarted workers then continue exactly once: each resumes at its Kafka committed offset (at or below
the rebuild's end offsets, since the workers were stopped before it started) and skips every record at or
below the applied offsets the rebuild wrote; the test above even deletes the consumer group so the worker
re-reads from offset 0. The API needs no restart: it follows the current version and reads user state
from Redis.

What can differ from the lost state, and why it is acceptable:

- **Interleaving of a user's clicks and purchases.** They are on two topics. Within a topic the order is
  the partition's, identical in any replay; how the two topics interleave in a history depends on how the
  consumer's fetches met, which the live worker does not fix either. Counts, per-type order and (when the
  history was not capped) the set of interactions are identical; a capped history may keep a different
  click or purchase at its oldest end.
- **Model version.** A new version name and a refit's factors instead of the lost ones (vectors are the
  exact fold-in of each history against it).
- **De-duplication and trending keys.** Every replayed event id is marked as seen for one
  `STREAMREC_DEDUP_WINDOW_S` (about 16 bytes plus Redis overhead per event); a duplicate sent more than
  the window after its original, applied twice the first time, is applied once by the replay. Trending
  buckets of old events are re-created and expire with their normal TTL; they are outside the windows the
  API reads.
- **Retention.** Events removed by topic retention cannot be replayed (the rebuild warns); the local
  stack keeps the topics forever (`log.retention.hours=-1`).

The runbook is in [docs/operations.md](operations.md#redis-lost-its-data-streamrec-rebuild).

## What the suite found and fixed

- `decode_event` raised `OverflowError` (not `InvalidEvent`) for `"ts": Infinity` or `1e400`: the
  collector answered 503 to such a request. `streamrec/events.py` now rejects non-finite timestamps as
  invalid input (found by the property-based tests).
- A `streamrec batch run` killed while writing a version left its half-written keys (the users hash:
  tens of MB) in Redis forever, since only listed versions are cleaned up. The refit now removes
  abandoned versions before it publishes (`batch/refit.py`, `remove_abandoned_versions`).
- `streamrec worker` printed `STREAMREC_REDIS_URL` verbatim at start-up, password included, and
  `streamrec config --effective` and the demo showed it too; they now print it with the password masked
  (`streamrec.store.redacted_url`).
- Percent-escapes that are not valid UTF-8 in a URL (`/v1/users/%FF/...`) were decoded to U+FFFD, so
  different raw ids mapped to one (a `PUT /v1/items/%FF` wrote the item `\\ufffd`); the API now answers 400
  (`online_api/middleware.py`).
""".strip("\n")


def main() -> int:
    if not RESULTS.exists():
        print(f"no results at {RESULTS}: run `make reliability`", file=sys.stderr)
        return 1
    data = json.loads(RESULTS.read_text())
    found = problems(data)
    if found:
        print("not writing docs/reliability.md:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    DOC.write_text(render(data))
    print(f"wrote {DOC.relative_to(REPO_ROOT)} from {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

