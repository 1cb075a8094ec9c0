"""The one enumeration of what became of an artifact and of a sync cycle, and their words.

An artifact's :class:`Outcome` is what the state remembers (``state.json``), what an inbox zip
and a delivery report, and what the metrics count; a cycle's :class:`CycleOutcome` is what
``sync --json`` prints. Each maps to the other words it needs here, once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

ArtifactMetric = Literal["installed", "rejected", "skipped"]


class CycleOutcome(StrEnum):
    """How one synchronization cycle ended (``sync --json``'s ``outcome``)."""

    INSTALLED = "installed"
    UP_TO_DATE = "up_to_date"
    REJECTED = "rejected"
    DISABLED = "disabled"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def completed(self) -> bool:
        """The cycle ran to its end (counts against ``min_interval_minutes``)."""
        return self in {CycleOutcome.INSTALLED, CycleOutcome.UP_TO_DATE, CycleOutcome.REJECTED}


class Outcome(StrEnum):
    """What became of one artifact."""

    INSTALLED = "installed"
    UP_TO_DATE = "up_to_date"  # already serving these models
    REJECTED = "rejected"  # its content is bad: never downloaded again
    EXPIRED = "expired"  # GitHub no longer has it
    FAILED = "failed"  # something else went wrong (network, disk, lock): tried again

    @property
    def final(self) -> bool:
        """Nothing about it will change: it is not downloaded again."""
        return self is not Outcome.FAILED

    @property
    def cycle(self) -> CycleOutcome:
        """The cycle's outcome when this artifact is what the cycle ended on."""
        return _CYCLE[self]

    @property
    def metric(self) -> ArtifactMetric:
        """The ``model_sync_artifacts_total`` outcome label."""
        if self is Outcome.INSTALLED:
            return "installed"
        if self is Outcome.REJECTED:
            return "rejected"
        return "skipped"


_CYCLE = {
    Outcome.INSTALLED: CycleOutcome.INSTALLED,
    Outcome.UP_TO_DATE: CycleOutcome.UP_TO_DATE,
    Outcome.REJECTED: CycleOutcome.REJECTED,
    Outcome.EXPIRED: CycleOutcome.SKIPPED,
    Outcome.FAILED: CycleOutcome.FAILED,
}
