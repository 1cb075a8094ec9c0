"""ProductionMonitoringService, read the way Prometheus reads it: render, then parse the text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.services.breaker import CircuitState
from app.services.monitoring import ARTIFACT_REASONS, ProductionMonitoringService
from tests import metrics
from tests.metrics import Series, labels_of, parse_metrics


def scrape(monitoring: ProductionMonitoringService) -> dict[Series, float]:
    """Every sample the /metrics body holds, keyed by name and labels."""
    body, _ = monitoring.render()
    return parse_metrics(body.decode())


def value(monitoring: ProductionMonitoringService, name: str, **labels: str) -> float | None:
    return metrics.value(scrape(monitoring), name, **labels)


def series_of(monitoring: ProductionMonitoringService, name: str) -> list[dict[str, str]]:
    return labels_of(scrape(monitoring), name)


@pytest.fixture
def monitoring() -> ProductionMonitoringService:
    return ProductionMonitoringService()


def test_render_serves_the_prometheus_text_format(monitoring: ProductionMonitoringService) -> None:
    body, content_type = monitoring.render()

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    assert families["model_sync_cycles"] == "counter"
    assert families["trading_brain_decision_seconds"] == "histogram"
    prefixes = ("model_sync_", "trading_brain_", "trading_paper_")
    assert all(name.startswith(prefixes) for name in families)


def test_sync_cycles_are_counted_by_outcome(monitoring: ProductionMonitoringService) -> None:
    assert value(monitoring, "model_sync_cycles_total", outcome="installed") == 0  # exists at start

    monitoring.record_sync("installed")
    monitoring.record_sync("installed")
    monitoring.record_sync("up_to_date")

    assert value(monitoring, "model_sync_cycles_total", outcome="installed") == 2
    assert value(monitoring, "model_sync_cycles_total", outcome="up_to_date") == 1
    assert value(monitoring, "model_sync_cycles_total", outcome="failed") == 0


def test_artifacts_are_counted_by_outcome_and_reason(
    monitoring: ProductionMonitoringService,
) -> None:
    monitoring.record_artifact("rejected", "digest_mismatch")
    monitoring.record_artifact("installed", "ok")

    assert (
        value(
            monitoring, "model_sync_artifacts_total", outcome="rejected", reason="digest_mismatch"
        )
        == 1
    )
    assert value(monitoring, "model_sync_artifacts_total", outcome="installed", reason="ok") == 1


def test_label_values_outside_the_documented_sets_count_as_other(
    monitoring: ProductionMonitoringService,
) -> None:
    free_text: Any = "sha256 of models/rl/agent.onnx was 9f86d08..."
    monitoring.record_artifact("rejected", free_text)
    monitoring.record_sync(free_text)

    assert "other" in ARTIFACT_REASONS
    assert value(monitoring, "model_sync_artifacts_total", outcome="rejected", reason="other") == 1
    assert value(monitoring, "model_sync_cycles_total", outcome="other") == 1
    assert {labels["reason"] for labels in series_of(monitoring, "model_sync_artifacts_total")} == {
        "other"
    }


def test_downloads_add_bytes_and_time(monitoring: ProductionMonitoringService) -> None:
    monitoring.record_download(1_500_000, 0.8)
    monitoring.record_download(500_000, 12.0)

    assert value(monitoring, "model_sync_download_bytes_total") == 2_000_000
    assert value(monitoring, "model_sync_download_seconds_count") == 2
    assert value(monitoring, "model_sync_download_seconds_sum") == pytest.approx(12.8)
    assert value(monitoring, "model_sync_download_seconds_bucket", le="1.0") == 1


def test_reloads_are_timed_by_outcome(monitoring: ProductionMonitoringService) -> None:
    monitoring.record_reload("installed", 0.4)
    monitoring.record_reload("refused", 0.1)
    monitoring.record_reload("refused", 0.2)

    assert value(monitoring, "trading_brain_reload_seconds_count", outcome="installed") == 1
    assert value(monitoring, "trading_brain_reload_seconds_count", outcome="refused") == 2
    assert value(
        monitoring, "trading_brain_reload_seconds_sum", outcome="refused"
    ) == pytest.approx(0.3)


def test_decisions_are_counted_with_sub_millisecond_latency(
    monitoring: ProductionMonitoringService,
) -> None:
    monitoring.record_decision("buy", 0.00008)
    monitoring.record_decision("hold", 0.0004)
    monitoring.record_decision("hold", 0.003)

    assert value(monitoring, "trading_brain_decisions_total", action="buy") == 1
    assert value(monitoring, "trading_brain_decisions_total", action="hold") == 2
    assert value(monitoring, "trading_brain_decision_seconds_bucket", le="0.0001") == 1
    assert value(monitoring, "trading_brain_decision_seconds_bucket", le="0.0005") == 2
    assert value(monitoring, "trading_brain_decision_seconds_count") == 3


def test_a_new_model_replaces_its_slots_info(monitoring: ProductionMonitoringService) -> None:
    monitoring.set_active_model("unified_brain", "1.0.0", "aa" * 32, run_id=101)
    monitoring.set_active_model("rl_agent", "0.3", "cc" * 32)
    monitoring.set_active_model("unified_brain", "1.1.0", "bb" * 32, run_id=102)

    by_slot = {
        labels["slot"]: labels
        for labels in series_of(monitoring, "trading_brain_active_model_info")
    }
    assert by_slot == {
        "unified_brain": {
            "slot": "unified_brain",
            "version": "1.1.0",
            "sha256": "bb" * 32,
            "run_id": "102",
        },
        "rl_agent": {"slot": "rl_agent", "version": "0.3", "sha256": "cc" * 32, "run_id": ""},
    }
    assert value(monitoring, "trading_brain_active_model_info", **by_slot["unified_brain"]) == 1


def test_rate_limit_remaining_is_the_last_value_seen(
    monitoring: ProductionMonitoringService,
) -> None:
    monitoring.set_rate_limit_remaining(4999)
    monitoring.set_rate_limit_remaining(4321)

    assert value(monitoring, "model_sync_github_rate_limit_remaining") == 4321


def test_breaker_state_is_a_level_per_operation(monitoring: ProductionMonitoringService) -> None:
    monitoring.set_breaker_state("download", "open")
    monitoring.set_breaker_state("list_runs", "closed")
    monitoring.set_breaker_state("list_artifacts", "open")
    monitoring.set_breaker_state("list_artifacts", "half_open")

    assert value(monitoring, "model_sync_circuit_breaker_state", operation="download") == 2
    assert value(monitoring, "model_sync_circuit_breaker_state", operation="list_runs") == 0
    assert value(monitoring, "model_sync_circuit_breaker_state", operation="list_artifacts") == 1


def test_breaker_state_takes_the_breakers_own_states(
    monitoring: ProductionMonitoringService,
) -> None:
    monitoring.set_breaker_state("download", CircuitState.HALF_OPEN)

    assert value(monitoring, "model_sync_circuit_breaker_state", operation="download") == 1


def test_an_unknown_breaker_state_is_refused(monitoring: ProductionMonitoringService) -> None:
    with pytest.raises(ValueError, match="broken"):
        monitoring.set_breaker_state("download", "broken")


def test_last_success_is_unix_seconds(monitoring: ProductionMonitoringService) -> None:
    paris = timezone(timedelta(hours=1))
    monitoring.mark_sync_success(datetime(2024, 3, 1, 13, 0, tzinfo=paris))
    assert value(monitoring, "model_sync_last_success_timestamp_seconds") == 1709294400

    monitoring.mark_sync_success(datetime(2024, 3, 1, 12, 0, 1, tzinfo=UTC))
    assert value(monitoring, "model_sync_last_success_timestamp_seconds") == 1709294401

    naive = datetime(2024, 3, 1, 12, 0, 2)
    monitoring.mark_sync_success(naive)
    assert value(monitoring, "model_sync_last_success_timestamp_seconds") == 1709294402


def test_two_services_do_not_share_metrics() -> None:
    first = ProductionMonitoringService()
    second = ProductionMonitoringService()  # a shared registry would refuse the duplicate names

    first.record_sync("installed")
    first.set_active_model("unified_brain", "1.0.0", "aa" * 32)

    assert value(first, "model_sync_cycles_total", outcome="installed") == 1
    assert value(second, "model_sync_cycles_total", outcome="installed") == 0
    assert series_of(second, "trading_brain_active_model_info") == []
    assert first.registry is not second.registry


def test_the_journal_counters_are_read_at_scrape_time(
    monitoring: ProductionMonitoringService,
) -> None:
    counts = [(0, 0, 0, 0)]
    monitoring.watch_journal(lambda: counts[-1])
    counts.append((120, 3, 2, 7))

    assert value(monitoring, "trading_journal_rows_written_total") == 120
    assert value(monitoring, "trading_journal_rows_dropped_total") == 3
    assert value(monitoring, "trading_journal_write_errors_total") == 2
    assert value(monitoring, "trading_journal_rows_pending") == 7
