"""Render a `streamrec eval` result: a plain table for the terminal and a markdown section for the docs.

A run's markdown section sits between ``<!-- eval:<key>:begin -->`` and ``<!-- eval:<key>:end -->``
(key: the dataset, plus ``-exclude-seen`` or ``-repeats``), so a run replaces only its own section and
the hand-written text around it stays.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

METRICS = ("hit_rate", "recall", "map", "ndcg", "coverage")
HEADERS = ("HR", "R", "MAP", "NDCG", "coverage")
TITLES = {"globo": "Globo G1 news clicks", "completejourney": "The Complete Journey purchases"}


def _table(rows: dict[str, dict[str, float]], k: int) -> list[str]:
    best_other = max((m[f"ndcg@{k}"] for n, m in rows.items() if not n.startswith("hybrid")), default=0.0)
    out = ["| method | " + " | ".join(f"{h}@{k}" for h in HEADERS) + " | NDCG vs best other |",
           "|" + "---|" * (len(HEADERS) + 2)]
    for name, m in rows.items():
        cells = " | ".join(f"{m[f'{key}@{k}']:.4f}" for key in METRICS)
        ratio = m[f"ndcg@{k}"] / best_other if best_other > 0 else float("nan")
        out.append(f"| {name} | {cells} | {ratio:.3f} |")
    return out


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def chosen_lines(c: dict[str, Any]) -> list[str]:
    """The parameters chosen on validation, one bullet per method."""
    cv, h, als = c["covisitation"], c["hybrid"], c["als"]
    weights = ", ".join(f"{s} {h[s]:g}" for s in ("personal", "covisitation", "repeat", "trending", "popular",
                                                  "content") if s in h)
    return [f"- trending: {c['trending_label']}; popular: half-life {_span(c['popular_half_life_s'])}",
            f"- personal_frequency: half-life {_span(c['frequency_half_life_s'])}",
            f"- covisitation: window {_span(cv['window_s'])}, {cv['max_prev']} previous items, half-life "
            f"{_span(cv['half_life_s'])}, reverse weight {cv['backward_weight']:g}; session: newest "
            f"{c['session_items']} items, decay {c['session_decay']:g}",
            f"- ALS: factors {als['factors']}, regularization {als['regularization']:g}, alpha {als['alpha']:g}, "
            f"iterations {als['iterations']}, weight half-life {als['half_life_days'] or 'none'} d",
            f"- hybrid weights: {weights} (candidates {h['candidates']} per source)"]


def ranker_line(info: dict[str, Any] | None, k: int) -> str:
    """What became of the learned ranker on validation."""
    if not info:
        return "No learned ranker (--ranker-sample 0)."
    if "holdout_ndcg" not in info:
        return f"No learned ranker ({info.get('reason', 'not fitted')})."
    verdict = "serves the hybrid" if info["used"] else "not used: the blend serves"
    return (f"Learned ranker: {info['iterations']} trees fitted on {info['fit_queries']:,} validation queries, "
            f"held-out NDCG@{k} {info['holdout_ndcg']:.4f} vs the blend's {info['blend_holdout_ndcg']:.4f} on the "
            f"newest {info['holdout_queries']:,}: {verdict}.")


def section_key(r: dict[str, Any]) -> str:
    """The marker key of a run's section: dataset and exclusion (and ``-cold-start`` for a run with slices)."""
    cold = "-cold-start" if "slices" in r else ""
    return f"{r['dataset']}-{'exclude-seen' if r['exclude_seen'] else 'repeats'}{cold}"


SLICE_TEXT = {"item_cold_start": "queries holding an item without any event before the test model's training "
                                 "cut-off (only those items count as relevant)",
              "user_cold_start": "the first query of each user whose history before the test window was hidden "
                                 "(a profile, no history)"}


def slice_lines(r: dict[str, Any]) -> list[str]:
    """The cold-start slices' tables, with the ratios the bars read."""
    k, out = r["k"], []
    c = r.get("cold_start", {})
    if c:
        out += [f"Cold start: {c.get('items_with_content', 0):,} items with metadata, the content regression "
                f"trained on {c.get('content_training_items', 0):,} and predicting {c.get('content_vectors', 0):,} "
                f"items the model does not know; {c.get('users_with_profile', 0):,} profiles, the profile "
                f"regression trained on {c.get('profile_training_users', 0):,} users; "
                f"{c.get('hidden_users', 0):,} users' history before the test window hidden.", ""]
    for name, part in r.get("slices", {}).items():
        methods = part["methods"]
        out += [f"#### {name}: {part['queries']:,} queries, {SLICE_TEXT.get(name, '')}", ""]
        if methods:
            out += [*_table(methods, k), ""]
            out += [_ratio_line(name, methods, k), ""]
    return out


def _ratio_line(name: str, methods: dict[str, dict[str, float]], k: int) -> str:
    def ratio(a: str, b: str, metric: str) -> str:
        den = methods.get(b, {}).get(f"{metric}@{k}", 0.0)
        return f"{methods[a][f'{metric}@{k}'] / den:.3f}" if den > 0 and a in methods else "n/a"
    if name == "item_cold_start":
        return f"HR@{k} hybrid / hybrid_without_content: {ratio('hybrid', 'hybrid_without_content', 'hit_rate')}."
    return f"NDCG@{k} hybrid / trending: {ratio('hybrid', 'trending', 'ndcg')}."


def markdown_section(r: dict[str, Any]) -> str:
    """The generated part of docs/evaluation.md for one run."""
    key, ev = section_key(r), r["events_per_window"]
    blend = r["validation"]["blend"]
    return "\n".join([
        f"<!-- eval:{key}:begin -->",
        f"### {TITLES.get(r['dataset'], r['dataset'])}, exclude seen items: {str(r['exclude_seen']).lower()}",
        "",
        f"Generated by `{r['command']}` in {r['seconds']:.0f} s. {r['events']:,} events, {r['users']:,} users, "
        f"{r['items']:,} items ({r['source']}); {ev['train']:,} training / {ev['validation']:,} validation "
        f"events, {ev['refit']:,} refit / {ev['test']:,} test events. Test: {r['queries']:,} prequential queries "
        f"(seeded sample {r['seed']}; every event applied).",
        "",
        *_table(r["test"], r["k"]),
        "",
        "Chosen on validation:",
        "",
        *chosen_lines(r["chosen"]),
        "",
        f"Hybrid weights learned by {blend['how']} (validation NDCG@{r['k']} {blend['start_ndcg']:.4f} with the "
        f"default weights, {blend['learned_ndcg']:.4f} learned). {ranker_line(blend.get('ranker'), r['k'])} "
        f"The hybrid read the newest {r.get('history_cap', 200):,} interactions per user (STREAMREC_HISTORY_CAP).",
        "",
        *slice_lines(r),
        f"<!-- eval:{key}:end -->"])


def render_text(r: dict[str, Any]) -> str:
    """A compact terminal summary: the test table and the chosen parameters."""
    return "\n".join([f"{r['dataset']} (exclude_seen={r['exclude_seen']}), test, prequential, "
                      f"{r['queries']:,} queries:", *_table(r["test"], r["k"]), "", *chosen_lines(r["chosen"]),
                      *(["", *slice_lines(r)] if "slices" in r else []), f"({r['seconds']:.0f} s)"])


def write_report(r: dict[str, Any], out: Path) -> Path:
    """Replace (or append) the run's section in ``out``; returns the file written."""
    section = markdown_section(r)
    text = out.read_text() if out.exists() else "# Offline evaluation\n"
    key = section_key(r)
    pattern = re.compile(rf"<!-- eval:{key}:begin -->.*?<!-- eval:{key}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text if text.endswith("\n") else text + "\n")
    return out
