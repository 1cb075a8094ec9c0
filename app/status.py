"""The operator's view of the models: what serves, where it came from, its backups, last sync.

Shared by ``python -m app status`` and the ops server's ``/status``.
"""

from __future__ import annotations

from typing import Any

from app.errors import AppError
from app.install.installer import ModelInstaller
from app.services.state import StateStore


def _quarantined(models: ModelInstaller, sha256: str) -> str | None:
    """Why the model on disk must not trade, when the quarantine holds it."""
    try:
        entry = models.quarantine.holds(sha256)
    except AppError as error:
        return str(error)
    if entry is None:
        return None
    return (
        f"quarantined since {entry.since} ({entry.why}); a host rolls it back at start, and "
        "refuses it while running"
    )


def status_report(
    models: ModelInstaller, state: StateStore, lifecycle: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Active models with provenance, their backups, and the last sync, as plain data;
    `lifecycle`: the decision slot's stage (``app.lifecycle.report.describe``)."""
    installed = state.read_installed()  # fresh: another process may have installed
    last = state.state.last_sync  # not load(): that would drop a running cycle's changes
    report: dict[str, Any] = {}
    for slot, why in models.unservable.items():  # nothing could serve it: what is on disk
        report[slot] = {
            "path": str(models.layout.path_of(models.brain.settings.slots[slot].path)),
            "sha256": None,
            "version": None,
            "size_bytes": None,
            "provenance": None,
            "backups": [path.name for path in models.backups(slot)],
            "problem": f"{why}; no valid backup: install a model to repair it",
        }
    serving = models.brain.snapshot.models if models.brain.loaded else {}
    for slot, model in serving.items():
        provenance = installed.get(slot)
        matches = provenance is not None and provenance.sha256 == model.sha256
        report[slot] = {
            "path": str(model.path),
            "sha256": model.sha256,
            "version": model.version,
            "size_bytes": model.size_bytes,
            "provenance": provenance.model_dump(mode="json") if matches and provenance else None,
            "backups": [path.name for path in models.backups(slot)],
            "problem": model.fallback_reason or _quarantined(models, model.sha256),
        }
    decision_slot = models.brain.settings.decision_slot
    if lifecycle is not None and decision_slot in report:
        report[decision_slot]["lifecycle"] = lifecycle
    return {
        "models": report,
        "last_sync": None if last is None else last.model_dump(mode="json"),
    }
