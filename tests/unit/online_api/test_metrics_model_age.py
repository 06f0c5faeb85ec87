"""`streamrec_model_trained_timestamp_seconds`: when the model the API serves was trained, which the
StreamrecModelStale alert subtracts from now. It follows the served model, back in time on a rollback."""

from __future__ import annotations

from prometheus_client import generate_latest

from online_api.metrics import ApiMetrics, trained_timestamp

NAME = "streamrec_model_trained_timestamp_seconds"


def _trained(m: ApiMetrics) -> float | None:
    return m.registry.get_sample_value(NAME)


def test_trained_at_ms_wins_and_vectors_at_ms_stands_in_for_versions_without_it() -> None:
    assert trained_timestamp({"trained_at_ms": 1_700_000_000_500, "vectors_at_ms": 1_700_000_009_000}) \
        == 1_700_000_000.5
    assert trained_timestamp({"synthetic": True, "vectors_at_ms": 1_700_000_009_000}) == 1_700_000_009.0
    for meta in ({}, {"trained_at_ms": None}, {"trained_at_ms": "soon"}, {"trained_at_ms": True},
                 {"trained_at_ms": 0}):
        assert trained_timestamp(meta) is None, meta


def test_gauge_follows_the_served_model_including_a_rollback() -> None:
    m = ApiMetrics()
    assert _trained(m) == 0  # no model served yet: the alert leaves 0 out
    m.observe_model("v1", {"trained_at_ms": 1_700_000_000_000}, 10)
    assert _trained(m) == 1_700_000_000.0
    m.observe_model("v2", {"trained_at_ms": 1_700_003_600_000}, 12)
    assert _trained(m) == 1_700_003_600.0
    m.observe_model("v1", {"trained_at_ms": 1_700_000_000_000}, 10)  # rolled back: older again
    assert _trained(m) == 1_700_000_000.0
    assert m.registry.get_sample_value("streamrec_api_model_info", {"version": "v1"}) == 1
    # A version whose meta has no timestamp: unknown (0), never the previous version's time.
    m.observe_model("v3", {}, 5)
    assert _trained(m) == 0


def test_gauge_is_exposed_with_its_help() -> None:
    m = ApiMetrics()
    m.observe_model("v1", {"vectors_at_ms": 1_700_000_000_000}, 3)
    text = generate_latest(m.registry).decode()
    assert f"# TYPE {NAME} gauge" in text
    assert f"{NAME} 1.7e+09" in text
