"""The outcome-reporting API for a bot that trades for real (README: "Embedding").

A host with real fills journals each decision through :meth:`OutcomeReporter.decided`, and
later reports what it returned (per decision with :meth:`~OutcomeReporter.report`, or per
trade with :meth:`~OutcomeReporter.report_trade`), attributed to the versions that decided.
Reported outcomes take the place of the paper positions in every figure for those versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import numpy as np

from app.brain.decision import Decision
from app.trading.figures import VersionFigures, version_figures
from app.trading.journal import DecisionJournal
from app.trading.positions import POSITION_OF


class DecisionTicket(NamedTuple):
    """Which decision an outcome belongs to: its bar, the version that made it, its role."""

    bar_time: float
    version: str
    role: str
    position: int


def _seconds(at: float | datetime) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class OutcomeReporter:
    """Journals a bot's decisions and the returns its real fills made."""

    def __init__(self, journal: DecisionJournal, *, decision_slot: str = "unified_brain") -> None:
        self._journal = journal
        self._slot = decision_slot

    def decided(
        self,
        decision: Decision,
        features: np.ndarray | list[float],
        *,
        at: float | datetime,
        close: float | None = None,
        role: str = "champion",
    ) -> DecisionTicket:
        """Journal `decision`, made on the bar at `at`; keep the ticket to report its outcome."""
        bar_time = _seconds(at)
        row = np.asarray(features, dtype=np.float32)
        self._journal.record_decision(bar_time, close, row, decision, role)
        version = decision.versions.get(self._slot, "")
        return DecisionTicket(bar_time, version, role, POSITION_OF[decision.action])

    def report(
        self, ticket: DecisionTicket, net_return: float, *, gross_return: float | None = None
    ) -> None:
        """What the position taken on `ticket`'s decision returned, after costs (and before)."""
        self._journal.record_outcome(
            ticket.bar_time,
            ticket.version,
            net_return=_finite("net_return", net_return),
            gross_return=None if gross_return is None else _finite("gross_return", gross_return),
            position=ticket.position,
            role=ticket.role,
            source="reported",
        )

    def report_trade(
        self,
        decided_by: DecisionTicket | Decision | Mapping[str, str],
        net_return: float,
        *,
        opened_at: float | datetime,
        closed_at: float | datetime,
        position: int | None = None,
        role: str = "champion",
    ) -> None:
        """A whole trade, opened and closed, attributed to the version that opened it."""
        if isinstance(decided_by, DecisionTicket):
            version, role = decided_by.version, decided_by.role
            held = decided_by.position if position is None else position
        else:
            versions = decided_by.versions if isinstance(decided_by, Decision) else decided_by
            version = versions.get(self._slot, "")
            held = position or 0
        self._journal.record_outcome(
            _seconds(closed_at),
            version,
            net_return=_finite("net_return", net_return),
            position=held,
            role=role,
            source="reported",
            kind="trade",
            opened_at=_seconds(opened_at),
        )

    def figures(self) -> dict[str, VersionFigures]:
        """Each version's figures so far (writes what is pending first; blocking)."""
        self._journal.flush()
        return version_figures(self._journal)
