"""What the brain's events mean to monitoring and to the operator's inbox (alerts)."""

from __future__ import annotations

from datetime import UTC, datetime

from app.brain.models import SwapEvent
from app.errors import reason_code_of
from app.install.installer import ModelInstaller, SwapListener
from app.services.alerts import EmailAlerts
from app.services.monitoring import (
    ProductionMonitoringService,
    ReloadOutcome,
)


def swap_listener(
    monitoring: ProductionMonitoringService | None, alerts: EmailAlerts | None
) -> SwapListener:
    """Reload metrics and alerts for every reload attempt; never blocks, never raises."""

    def on_swap(event: SwapEvent) -> None:
        result = event.result
        if monitoring is not None:
            outcome: ReloadOutcome = "installed" if result.ok else "refused"
            # Every swap and refusal, whatever its source; only timed reloads in the histogram
            # (the brain does not time a model it picks up from disk).
            reason = "ok" if result.ok else reason_code_of(result.error)
            monitoring.record_swap(outcome, event.source, reason)
            if event.kind != "refreshed":
                monitoring.record_reload(outcome, result.seconds)
        if alerts is None:
            return
        if event.kind == "installed":
            versions = {slot: model.version for slot, model in result.installed.items()}
            alerts.notify_installed(versions, datetime.now(UTC), details=f"source: {event.source}")
        elif event.kind == "refused":
            alerts.notify_refused(result.reason, event.source)
        elif event.kind == "rolled_back" and event.source != "lifecycle":  # it mails its own
            for slot, model in result.installed.items():
                restored = event.offered.get(slot)
                alerts.notify_rollback(slot, restored.name if restored else "", model.version)

    return on_swap


def observe_brain(
    models: ModelInstaller,
    monitoring: ProductionMonitoringService | None,
    alerts: EmailAlerts | None,
) -> ModelInstaller:
    """Attach metrics and alerts to `models` and its brain; returns it (a provider can wrap it)."""
    models.add_listener(swap_listener(monitoring, alerts))
    if monitoring is not None:
        models.brain.observe_decisions(monitoring.record_decision)
    return models
