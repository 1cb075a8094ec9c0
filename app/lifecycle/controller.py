"""The decision slot's model lifecycle in a running host: shadow, canary, champion, quarantine.

A newly installed model never trades until the lifecycle says so: the brain decides with the
pinned champion (``TradingBrain.pin``) while the install transaction puts the new model on disk
and in the snapshot. At the next bar the lifecycle sees it, whatever route it came by (sync,
webhook, inbox, ``install``, a file replaced on disk), and starts its stage:

- **shadow** (``lifecycle.shadow_minutes`` > 0, or the bar is in a ``lifecycle.blackout``
  window): the candidate decides beside the champion on the same rows, trading nothing;
- **canary**: the candidate trades, and the champion it displaced decides in shadow;
- the judge (``judge.py``) sees every paired bar. A guardrail or a significant degradation
  fails the candidate: the champion decides again from the next bar (it is still loaded: it was
  the shadow), the candidate's SHA-256 and artifact are quarantined, and the files are rolled
  back through the install transaction in the background. At the end of the canary window a
  pass (or an inconclusive end with ``on_inconclusive: keep``) promotes the candidate.

Every stage change is journaled with the figures that decided it, alerted, counted, and
written to ``models/.sync/lifecycle.json`` so a restarted host resumes a canary where it was.
A restored backup (a rollback, by hand or by the judge) is not judged again: it is a model that
already served.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.decision import Decision
from app.brain.models import LoadedModel
from app.errors import AppError
from app.install.installer import ModelInstaller
from app.lifecycle.blackout import Blackout
from app.lifecycle.files import ChampionFiles
from app.lifecycle.judge import Judge, JudgeRules, Outcome, PairedBar, Verdict
from app.lifecycle.record import LifecycleRecord, ModelRef, Stage, read_record, write_record
from app.lifecycle.report import StageChange, describe, finite_only, market_time, stage_mail
from app.lifecycle.shadow import Shadow
from app.settings import Settings
from app.trading.bars import Bar
from app.trading.journal import DecisionJournal, Transition
from app.trading.positions import BarOutcome, ClosedTrade, PaperBook

_SAVE_SECONDS = 1.0
_GAPS = 15  # while judging, the record is rewritten at most this often (wall time)


class LifecycleRefused(AppError):
    """A lifecycle control that cannot be done now (nothing to promote, another slot)."""


class StageAlerts(Protocol):
    def notify_stage(self, headline: str, lines: Sequence[str]) -> None: ...


class StageObserver(Protocol):
    """Metrics of the lifecycle (``ProductionMonitoringService``)."""

    def record_stage(self, slot: str, stage: str) -> None: ...

    def record_verdict(self, slot: str, verdict: str, rule: str) -> None: ...

    def set_paired_figures(self, slot: str, figures: Mapping[str, float | int | None]) -> None: ...


@dataclass(slots=True)
class _Judging:
    """A candidate in shadow or canary, and what judges it."""

    stage: Stage
    candidate: LoadedModel
    judge: Judge
    started_at: float | None  # market time of its first bar (None: resumed, not yet seen)
    ends_at: float | None
    bar_seconds: float  # the bar spacing its judge's rules were made for
    shadow: Shadow | None = None  # the model not trading; made at the stage's first bar


def _ref(model: LoadedModel) -> ModelRef:
    return ModelRef(sha256=model.sha256, version=model.version)


class ModelLifecycle:
    """Judges every new model of the decision slot before it stays (``lifecycle.mode: canary``)."""

    def __init__(
        self,
        settings: Settings,
        models: ModelInstaller,
        *,
        journal: DecisionJournal | None = None,
        alerts: StageAlerts | None = None,
        observer: StageObserver | None = None,
    ) -> None:
        self._settings = settings.lifecycle
        self._files = ChampionFiles(models, settings.brain.decision_slot)
        self._brain: TradingBrain = models.brain
        self._slot = settings.brain.decision_slot
        self._journal = journal
        self._alerts = alerts
        self._observer = observer
        self._blackout = Blackout(self._settings.blackout, self._settings.blackout_timezone)
        self._path = models.layout.lifecycle_file
        # The feed's bar spacing: the median of the latest gaps (a night's gap is one of many).
        self._spacing = settings.market.bar_seconds
        self._gaps: deque[float] = deque(maxlen=_GAPS)
        self._previous_bar: float | None = None  # seen by this process (not a record's)
        self._champion: LoadedModel | None = None
        self._judging: _Judging | None = None
        self._last: Verdict | None = None  # the last verdict given
        self._last_candidate: ModelRef | None = None
        self._seen: str | None = None  # the installed model already handled (SHA-256)
        self._last_bar: float | None = None
        self._resume_after: float | None = None  # the record's last bar, until a later one
        self._failed_under: str | None = None  # the champion's SHA-256 when a candidate failed
        self._saved_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- start and resume ------------------------------------------------------------------

    @property
    def champion(self) -> LoadedModel:
        if self._champion is None:
            raise LifecycleRefused("the lifecycle has not started (call start())")
        return self._champion

    @property
    def stage(self) -> Stage:
        return Stage.CHAMPION if self._judging is None else self._judging.stage

    async def start(self) -> None:
        """Resume what the record says, else take the serving model as champion.

        The record, not the file on disk, says which model should trade: a shadow or canary
        resumes where it was; a rollback a restart interrupted (the judge failed the model on
        disk, its file was not restored yet) is finished before anything trades on it; and a
        quarantined model on disk is rolled back.
        """
        record = await asyncio.to_thread(read_record, self._path)
        if record is not None and record.slot != self._slot:
            record = None
        if record is not None:
            self._last_bar = self._resume_after = record.last_bar
            installed = self._files.installed()
            if record.judging and await self._resume(record, installed):
                return
            if await self._finish_rollback(record, installed):
                return
        installed = await self._files.rid_of_quarantined()
        self._seen = installed.sha256
        self._settle(installed)
        if record is not None and record.judging and record.candidate is not None:
            # Its incumbent is gone from the shelf: no pair to judge it on, said as a verdict.
            self._last_candidate = record.candidate
            self._last = Verdict(
                Outcome.INCONCLUSIVE,
                "not_resumed",
                f"the {record.stage} of {record.candidate.version} could not resume: no backup "
                f"holds its incumbent {record.champion.version}; {installed.version} serves",
                int(record.figures.get("bars") or 0),
                dict(record.figures),
            )
            self._transition(record.stage, record.last_bar, self._last, self._last.reason)
        else:
            self._save(durable=True)
        logger.info(f"🏆 [LIFECYCLE] {self._slot}: version {installed.version} is the champion")
        await self._files.shelve(installed)

    async def _finish_rollback(self, record: LifecycleRecord, installed: LoadedModel) -> bool:
        """The record's last verdict rolled back the model on disk, whose file a restart kept
        from being restored: the champion trades again, and its file is restored."""
        candidate = record.candidate
        rolled_back = record.verdict == "fail" or (
            record.verdict == "inconclusive" and self._settings.on_inconclusive == "rollback"
        )
        if (
            record.judging
            or not rolled_back
            or candidate is None
            or candidate.sha256 != installed.sha256
            or record.champion.sha256 == installed.sha256
        ):
            return False
        champion = await self._files.load(record.champion)
        if champion is None:
            return False
        self._seen = installed.sha256  # handled: the restore below replaces it
        self._settle(champion)
        self._last_candidate = candidate
        self._last = Verdict(
            Outcome(record.verdict),
            record.rule or "",
            record.reason or "",
            int(record.figures.get("bars") or 0),
            dict(record.figures),
        )
        logger.warning(
            f"🔁 [LIFECYCLE] Finishing the rollback of {installed.version} a restart "
            f"interrupted: {champion.version} trades, and its file is restored first"
        )
        await self._files.restore(
            installed, champion, record.reason or "", quarantine=record.verdict == "fail"
        )
        return True

    async def _resume(self, record: LifecycleRecord, installed: LoadedModel) -> bool:
        candidate = record.candidate
        if candidate is None or candidate.sha256 != installed.sha256:
            return False
        incumbent = await self._files.load(record.champion)
        if incumbent is None:
            return False
        if record.bar_seconds:
            self._spacing = record.bar_seconds  # the same rules as before the restart
        rules = self._rules(record.stage)
        judge = Judge.from_json(rules, record.judge) if record.judge else Judge(rules)
        self._seen = installed.sha256
        self._champion = incumbent
        self._files.protect(incumbent)
        self._judging = _Judging(
            record.stage, installed, judge, record.started_at, record.ends_at, self._spacing
        )
        self._brain.pin(installed if record.stage is Stage.CANARY else incumbent)
        self._last_candidate = candidate
        logger.info(
            f"🔁 [LIFECYCLE] Resuming the {record.stage} of {installed.version} against "
            f"{incumbent.version} ({judge.figures.get('bars', 0)} bars judged; ends "
            f"{market_time(record.ends_at)})"
        )
        return True

    # -- every bar (the trading loop's BarWatcher) ----------------------------------------

    def _already_judged(self, bar: Bar) -> bool:
        """Bars up to the record's last one, fed again after a restart (a feed replayed with
        no journal to resume after): neither judged nor traded on paper twice."""
        if self._resume_after is None:
            return False
        if bar.time <= self._resume_after:
            return True
        self._resume_after = None
        return False

    def before_decision(self, bar: Bar, book: PaperBook) -> None:
        """Start, end or change a stage at this bar boundary, before the brain decides."""
        if self._already_judged(bar):
            return
        if self._previous_bar is not None and bar.time > self._previous_bar:
            self._gaps.append(bar.time - self._previous_bar)
            self._spacing = statistics.median(self._gaps)
        self._previous_bar = bar.time
        installed = self._files.installed()
        if installed.sha256 != self._seen:
            self._arrived(installed, bar, book)
        judging = self._judging
        if judging is None:
            return
        if judging.shadow is None:  # the stage's first bar (or the first after a restart)
            self._begin_paper(judging, bar, book)
        if (
            judging.stage is Stage.SHADOW
            and judging.ends_at is not None
            and bar.time >= judging.ends_at
            and not self._blackout.covers(bar.time)
        ):
            # The shadow ends as a canary does: on to the canary on a pass (or an
            # inconclusive end, with on_inconclusive: keep); rolled back otherwise.
            # A shadow that was only a blackout's wait (shadow_minutes 0) is no trial of its own.
            verdict = judging.judge.conclude()
            waited = self._settings.shadow_minutes == 0
            if verdict.outcome is Outcome.FAIL:
                self._fail(judging, verdict, bar.time)
            elif (
                verdict.outcome is Outcome.PASS
                or self._settings.on_inconclusive == "keep"
                or waited
            ):
                self._begin(Stage.CANARY, judging.candidate, bar, book, shadow_verdict=verdict)
            else:
                self._fail(judging, verdict, bar.time, quarantine=False)

    async def after_decision(
        self,
        bar: Bar,
        features: np.ndarray,
        decision: Decision | None,
        marked: BarOutcome | None,
        closed: ClosedTrade | None,
    ) -> None:
        """The model not trading decides on the same row; the judge sees the paired bar."""
        if self._resume_after is not None and bar.time <= self._resume_after:
            return  # fed again after a restart (before_decision said so)
        judging = self._judging
        if judging is None or judging.shadow is None:
            self._last_bar = bar.time
            return
        shadow = await judging.shadow.step(self._brain, bar, features, self._journal)
        self._last_bar = bar.time
        if judging is not self._judging:
            return  # a control changed the stage while the shadow decided
        first = judging.started_at is None or bar.time <= judging.started_at
        trading_return = 0.0 if first or marked is None else marked.net_return
        shadow_return = 0.0 if shadow.marked is None else shadow.marked.net_return
        # A decision that failed (the model raised) holds the position: an invalid output.
        action = decision.action if decision is not None else "hold"
        valid = decision.valid if decision is not None else False
        trading_position = None if first or marked is None else marked.position
        shadow_position = None if shadow.marked is None else shadow.marked.position
        if judging.stage is Stage.CANARY:
            pair = PairedBar(
                trading_return,
                shadow_return,
                action,
                shadow.decision.action,
                valid,
                closed is not None,
                candidate_position=trading_position,
                incumbent_position=shadow_position,
            )
        else:
            pair = PairedBar(
                shadow_return,
                trading_return,
                shadow.decision.action,
                action,
                shadow.decision.valid,
                shadow.closed is not None,
                candidate_position=shadow_position,
                incumbent_position=trading_position,
            )
        verdict = judging.judge.observe(pair)
        if verdict is not None and verdict.outcome is Outcome.FAIL:
            self._fail(judging, verdict, bar.time)
            return
        if (
            judging.stage is Stage.CANARY
            and judging.ends_at is not None
            and bar.time >= judging.ends_at
        ):
            self._conclude(judging, judging.judge.conclude(), bar.time)
            return
        if self._observer is not None:
            self._observer.set_paired_figures(self._slot, judging.judge.figures)
        if time.monotonic() - self._saved_at >= _SAVE_SECONDS:
            self._save(durable=False)

    # -- stages ----------------------------------------------------------------------------

    def _arrived(self, installed: LoadedModel, bar: Bar, book: PaperBook) -> None:
        """A model the lifecycle has not seen is installed: judge it, or settle on it."""
        self._seen = installed.sha256
        champion = self.champion
        restored = self._files.restored(installed)
        if installed.sha256 == champion.sha256 or restored:
            was = self.stage
            self._settle(installed)
            if was is not Stage.CHAMPION or installed.sha256 != champion.sha256:
                why = "restored from a backup" if restored else "the champion is installed again"
                self._transition(was, bar.time, None, why)
            return
        if self._judging is not None:
            logger.warning(
                f"⚠️ [LIFECYCLE] {self._judging.candidate.version} is superseded by "
                f"{installed.version} before its {self._judging.stage} ended"
            )
        stage = (
            Stage.SHADOW
            if self._settings.shadow_minutes > 0 or self._blackout.covers(bar.time)
            else Stage.CANARY
        )
        self._begin(stage, installed, bar, book)

    def _settle(self, model: LoadedModel) -> None:
        """`model` is the champion, judged no more (and its backup is kept on the shelf)."""
        self._champion = model
        self._judging = None
        self._brain.pin(model)
        self._files.protect(model)

    def _minutes(self, stage: Stage) -> float:
        settings = self._settings
        return settings.shadow_minutes if stage is Stage.SHADOW else settings.canary_minutes

    def _rules(self, stage: Stage) -> JudgeRules:
        """The judge's rules for `stage`'s window, at the feed's bar spacing."""
        return JudgeRules.of(
            self._settings, minutes=self._minutes(stage), bar_seconds=self._spacing
        )

    def _begin(
        self,
        stage: Stage,
        candidate: LoadedModel,
        bar: Bar,
        book: PaperBook,
        *,
        shadow_verdict: Verdict | None = None,
    ) -> None:
        was = self.stage
        minutes = self._minutes(stage)
        judging = _Judging(
            stage,
            candidate,
            Judge(self._rules(stage)),
            started_at=bar.time,
            ends_at=bar.time + minutes * 60,
            bar_seconds=self._spacing,
        )
        self._judging = judging
        self._last_candidate = _ref(candidate)
        self._begin_paper(judging, bar, book)
        if stage is Stage.SHADOW:
            why = f"deciding in shadow until {market_time(judging.ends_at)}"
            if self._blackout.covers(bar.time):
                why += f", and outside the blackout {self._blackout.description}"
        else:
            why = f"trading as a canary until {market_time(judging.ends_at)}"
        self._transition(was, bar.time, shadow_verdict, why)

    def _begin_paper(self, judging: _Judging, bar: Bar, book: PaperBook) -> None:
        """Who trades and who decides on paper, from this bar on."""
        if judging.started_at is None:  # resumed: the window goes on from here
            judging.started_at = bar.time
        trading, paper = (
            (judging.candidate, self.champion)
            if judging.stage is Stage.CANARY
            else (self.champion, judging.candidate)
        )
        self._brain.pin(trading)
        judging.shadow = Shadow(paper, book, bar.time)

    def _conclude(self, judging: _Judging, verdict: Verdict, at: float) -> None:
        """The canary window ended: promote, or (inconclusive, if so configured) roll back."""
        keep = verdict.outcome is Outcome.PASS or self._settings.on_inconclusive == "keep"
        if keep:
            self._promote(judging, verdict, at)
        else:
            self._fail(judging, verdict, at, quarantine=False)

    def _promote(self, judging: _Judging, verdict: Verdict, at: float | None) -> None:
        was = judging.stage
        self._last = verdict
        self._settle(judging.candidate)
        self._transition(was, at, verdict, f"promoted: {verdict.reason}")
        self._spawn(self._files.shelve(judging.candidate))

    def _fail(
        self, judging: _Judging, verdict: Verdict, at: float | None, *, quarantine: bool = True
    ) -> None:
        """The champion decides again from the next bar; the files follow in the background."""
        was = judging.stage
        candidate = judging.candidate
        champion = self.champion
        self._last = verdict
        self._judging = None
        self._failed_under = champion.sha256  # the champion the fail left in place
        self._brain.pin(champion)
        action = "rolled back and quarantined" if quarantine else "rolled back"
        self._transition(was, at, verdict, f"{action}: {verdict.reason}")
        self._spawn(self._files.restore(candidate, champion, verdict.reason, quarantine=quarantine))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for rollbacks and quarantines in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        """Let work in flight finish and write the record durably (the host is stopping)."""
        await self.settled()
        if self._champion is not None:
            await asyncio.to_thread(self._save, durable=True)

    # -- controls (CLI, /admin) -----------------------------------------------------------

    def _check_slot(self, slot: str | None) -> None:
        if slot not in (None, self._slot):
            raise LifecycleRefused(
                f"slot {slot!r} has no lifecycle: only the decision slot {self._slot!r} trades"
            )

    def _by_hand(self, outcome: Outcome, rule: str, reason: str) -> Verdict:
        judging = self._judging
        figures = dict(judging.judge.figures) if judging is not None else {}
        bars = int(figures.get("bars") or 0)
        return Verdict(outcome=outcome, rule=rule, reason=reason, bars=bars, figures=figures)

    def promote(self, slot: str | None = None) -> str:
        """Make the candidate in shadow or canary the champion now."""
        self._check_slot(slot)
        judging = self._judging
        if judging is None:
            raise LifecycleRefused(
                f"nothing to promote: {self.champion.version} is the champion and no model is "
                "in shadow or canary"
            )
        version = judging.candidate.version
        self._promote(judging, self._by_hand(Outcome.PASS, "by_hand", "promoted by hand"), None)
        return f"promoted {version}: it is the champion of {self._slot}"

    async def reject(self, slot: str | None = None) -> str:
        """Roll back and quarantine the candidate (or, with none, the champion itself)."""
        self._check_slot(slot)
        judging = self._judging
        if judging is not None:
            version = judging.candidate.version
            verdict = self._by_hand(Outcome.FAIL, "by_hand", "rejected by hand")
            self._fail(judging, verdict, self._last_bar)
            return (
                f"rejected {version}: {self.champion.version} decides again; "
                "its files are being restored"
            )
        return await self._reject_champion()

    async def _reject_champion(self) -> str:
        """Roll the champion back to its newest other backup, and quarantine it."""
        await self.settled()  # a restore in flight puts the champion's file back first
        if self._judging is not None:  # a candidate arrived meanwhile: that is the one
            return await self.reject()
        champion = self.champion
        last = self._last
        already = self._failed_under == champion.sha256
        if last is not None and last.outcome is Outcome.FAIL and already:
            candidate = self._last_candidate.version if self._last_candidate else "the candidate"
            raise LifecycleRefused(
                f"nothing to reject: {candidate} was already rolled back ({last.reason}); "
                f"{champion.version} is the champion (to reject it too, reject again once "
                "a newer model has been judged, or `python -m app rollback`)"
            )
        installed = self._files.installed()
        if installed.sha256 != champion.sha256:
            raise LifecycleRefused(
                f"cannot reject {champion.version} now: the file on disk is {installed.version}"
            )
        result = await self._files.roll_back(replacing=champion.sha256)
        restored = result.installed.get(self._slot)
        if not result.ok or restored is None or restored.sha256 == champion.sha256:
            raise LifecycleRefused(f"cannot reject {champion.version}: {result.reason}")
        await self._files.quarantine(champion, "rejected by hand")
        self._last = self._by_hand(Outcome.FAIL, "by_hand", "rejected by hand")
        self._last_candidate = _ref(champion)
        self._seen = restored.sha256  # already handled: no arrival at the next bar
        self._settle(restored)
        self._failed_under = restored.sha256
        why = f"rejected by hand and quarantined; {restored.version} restored"
        self._transition(Stage.CHAMPION, self._last_bar, self._last, why)
        return f"rejected {champion.version}: {restored.version} is restored and the champion"

    # -- what it says ----------------------------------------------------------------------

    def _record(self) -> LifecycleRecord:
        judging = self._judging
        last = self._last
        champion = self.champion
        if judging is None:
            return LifecycleRecord(
                slot=self._slot,
                stage=Stage.CHAMPION,
                champion=_ref(champion),
                candidate=self._last_candidate,
                verdict=str(last.outcome) if last is not None else "pending",
                rule=last.rule if last is not None else None,
                reason=last.reason if last is not None else None,
                figures=dict(last.figures) if last is not None else {},
                last_bar=self._last_bar,
            )
        return LifecycleRecord(
            slot=self._slot,
            stage=judging.stage,
            champion=_ref(champion),
            candidate=_ref(judging.candidate),
            started_at=judging.started_at,
            ends_at=judging.ends_at,
            verdict="pending",
            figures=dict(judging.judge.figures),
            judge=judging.judge.to_json(),
            bar_seconds=judging.bar_seconds,
            last_bar=self._last_bar,
        )

    def report(self) -> dict[str, Any]:
        """``status --json``'s ``models.<slot>.lifecycle``, live."""
        if self._champion is None:  # not started (yet)
            return describe(None, mode=self._settings.mode)
        return describe(self._record(), mode=self._settings.mode)

    def _save(self, *, durable: bool) -> None:
        self._saved_at = time.monotonic()
        try:
            write_record(self._path, self._record(), durable=durable)
        except OSError as error:
            logger.warning(f"⚠️ [LIFECYCLE] Cannot write {self._path.name}: {error}")

    def _transition(self, was: Stage, at: float | None, verdict: Verdict | None, why: str) -> None:
        """Journal, log, count, alert and persist a change of stage."""
        now = self.stage
        judging = self._judging
        candidate = judging.candidate if judging is not None else None
        figures = dict(verdict.figures) if verdict is not None else {}
        outcome = str(verdict.outcome) if verdict is not None else "pending"
        named = candidate.version if candidate is not None else None
        if named is None and self._last_candidate is not None and verdict is not None:
            named = self._last_candidate.version
        self._save(durable=True)
        if self._journal is not None:
            self._journal.record_transition(
                Transition(
                    bar_time=at,
                    recorded_at=time.time(),
                    slot=self._slot,
                    from_stage=str(was),
                    to_stage=str(now),
                    candidate=named,
                    incumbent=self.champion.version,
                    verdict=outcome,
                    rule=verdict.rule if verdict is not None else None,
                    reason=why,
                    figures=finite_only(figures),
                )
            )
        if self._observer is not None:
            self._observer.record_stage(self._slot, str(now))
            if verdict is not None:
                self._observer.record_verdict(self._slot, outcome, verdict.rule)
        emoji = "🚨" if outcome == "fail" else "🏆" if now is Stage.CHAMPION else "🐤"
        logger.bind(slot=self._slot, stage=str(now), verdict=outcome).info(
            f"{emoji} [LIFECYCLE] {self._slot}: {was} -> {now} ({named or '-'}): {why}"
        )
        if self._alerts is not None:
            headline, lines = stage_mail(
                StageChange(self._slot, was, now, named, self.champion.version, outcome, why),
                trading=self._brain.snapshot.deciding.version,
                figures=figures,
            )
            self._alerts.notify_stage(headline, lines)
