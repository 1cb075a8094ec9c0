"""Where every stage change goes: the record on disk, the journal, the log, metrics and mail.

The record (``models/.sync/lifecycle.json``) is written by one worker thread, in the order the
lifecycle asked, so a fsync never holds up the event loop (nor the bar being decided): a stage
change is written durably, the running figures of a stage at most once a second without fsync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from loguru import logger

from app.lifecycle.judge import Outcome, Verdict
from app.lifecycle.record import LifecycleRecord, Stage, write_record
from app.lifecycle.report import StageChange, finite_only, stage_mail
from app.trading.journal import DecisionJournal, Transition

_WRITING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifecycle-record")
_EMOJI = {"rolled_back": "🚨", "not_resumed": "⚠️", "superseded": "⚠️", "promoted": "🏆"}


class StageAlerts(Protocol):
    def notify_stage(self, headline: str, lines: Sequence[str]) -> None: ...


class StageObserver(Protocol):
    """Metrics of the lifecycle (``ProductionMonitoringService``)."""

    def record_stage(self, slot: str, stage: str) -> None: ...

    def record_verdict(self, slot: str, verdict: str, rule: str) -> None: ...

    def set_paired_figures(self, slot: str, figures: Mapping[str, float | int | None]) -> None: ...


class StageLedger:
    """The record's writer and the stage changes' announcer for one slot."""

    def __init__(
        self,
        path: Path,
        slot: str,
        *,
        journal: DecisionJournal | None = None,
        alerts: StageAlerts | None = None,
        observer: StageObserver | None = None,
    ) -> None:
        self.path = path
        self._slot = slot
        self._journal = journal
        self._alerts = alerts
        self.observer = observer
        self._last_write: Future[None] | None = None
        self.saved_at = 0.0  # monotonic time of the last save asked for
        self.updated_at: str | None = None  # wall time (ISO) of the last record written

    def save(self, record: LifecycleRecord, *, durable: bool) -> None:
        """Write `record` on the writer thread (after any write asked for before)."""
        self.saved_at = time.monotonic()
        self._last_write = _WRITING.submit(self._write, record, durable)

    def _write(self, record: LifecycleRecord, durable: bool) -> None:
        try:
            self.updated_at = write_record(self.path, record, durable=durable)
        except OSError as error:
            logger.warning(f"⚠️ [LIFECYCLE] Cannot write {self.path.name}: {error}")

    async def flush(self) -> None:
        """Wait for the writes asked for so far."""
        if self._last_write is not None:
            await asyncio.wrap_future(self._last_write)

    def announce(
        self,
        change: StageChange,
        verdict: Verdict | None,
        *,
        at: float | None,
        trading: str,
    ) -> None:
        """Journal, count, log and mail one change of stage (the record is saved apart)."""
        figures = dict(verdict.figures) if verdict is not None else {}
        if self._journal is not None:
            self._journal.record_transition(
                Transition(
                    bar_time=at,
                    recorded_at=time.time(),
                    slot=self._slot,
                    from_stage=str(change.was),
                    to_stage=str(change.now),
                    candidate=change.candidate,
                    incumbent=change.champion,
                    verdict=change.verdict,
                    rule=verdict.rule if verdict is not None else None,
                    reason=change.why,
                    figures=finite_only(figures),
                )
            )
        if self.observer is not None:
            self.observer.record_stage(self._slot, str(change.now))
            if verdict is not None and verdict.outcome is not Outcome.PENDING:
                self.observer.record_verdict(self._slot, change.verdict, verdict.rule)
        emoji = _EMOJI.get(change.kind, "🐤" if change.now is not Stage.CHAMPION else "🏆")
        logger.bind(slot=self._slot, stage=str(change.now), verdict=change.verdict).info(
            f"{emoji} [LIFECYCLE] {self._slot}: {change.was} -> {change.now} "
            f"({change.candidate or '-'}): {change.why}"
        )
        if self._alerts is not None:
            headline, lines = stage_mail(change, trading=trading, figures=figures)
            self._alerts.notify_stage(headline, lines)
