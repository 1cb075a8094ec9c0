"""The decision slot's model lifecycle in a running host: shadow, canary, champion.

A newly installed model never trades until the lifecycle says so: the brain decides with the
pinned champion (``TradingBrain.pin``) while the install transaction puts the new model on disk
and in the snapshot. At the next bar the lifecycle sees it, whatever route it came by (sync,
webhook, inbox, ``install``, a file replaced on disk), and starts its stage:

- **shadow** (``lifecycle.shadow_minutes`` > 0, or the bar is in a ``lifecycle.blackout``
  range): the candidate decides beside the champion on the same rows, trading nothing;
- **canary**: the candidate trades, and the champion it displaced decides in shadow;
- the judge (``judge.py``) sees every paired bar. A guardrail or a significant degradation
  fails the candidate: the champion decides again from the next bar (it is still loaded: it was
  the shadow), the candidate's SHA-256 and artifact are quarantined, and the champion's file is
  restored through the install transaction in the background. At the end of the canary window
  a pass (or an inconclusive end with ``on_inconclusive: keep``) promotes the candidate.

The record (``record.py``), not the file on disk, says which model trades: a restart resumes a
stage, finishes a rollback it interrupted, and judges a model installed while no bar came. Only
a model that was champion here (the record keeps the last few) is taken back without a canary;
any other backup on the shelf never passed one. Every stage change goes to the ledger
(``ledger.py``): the record, the journal, the log, metrics and mail.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.decision import Decision
from app.brain.models import LoadedModel
from app.errors import AppError
from app.install.installer import ModelInstaller
from app.lifecycle.blackout import Blackout
from app.lifecycle.files import ChampionFiles
from app.lifecycle.judge import Judge, JudgeRules, Outcome, Verdict
from app.lifecycle.ledger import StageAlerts, StageLedger, StageObserver
from app.lifecycle.record import (
    PAST_CHAMPIONS,
    LifecycleRecord,
    ModelRef,
    Stage,
    read_record,
)
from app.lifecycle.report import StageChange, describe, market_time
from app.lifecycle.shadow import Shadow, paired_bar
from app.settings import Settings
from app.trading.bars import Bar
from app.trading.journal import DecisionJournal
from app.trading.positions import BarOutcome, ClosedTrade, PaperBook

_SAVE_SECONDS = 1.0  # while judging, the record is rewritten at most this often (wall time)
_GAPS = 15  # the bar spacing is the median of this many latest gaps


class LifecycleRefused(AppError):
    """A lifecycle control that cannot be done now (nothing to promote, another slot)."""


@dataclass(slots=True)
class _Judging:
    """A candidate in shadow or canary, and what judges it."""

    stage: Stage
    candidate: LoadedModel
    judge: Judge
    started_at: float | None  # market time of its first bar (None: resumed, not yet seen)
    ends_at: float | None
    shadowed: bool = False  # a canary that came after a shadow (each spends alpha / 2)
    shadow: Shadow | None = None  # the model not trading; made at the stage's first bar


def _ref(model: LoadedModel) -> ModelRef:
    return ModelRef(sha256=model.sha256, version=model.version)


def _verdict_of(record: LifecycleRecord) -> Verdict:
    """The last verdict a record names."""
    bars = int(record.figures.get("bars") or 0)
    return Verdict(record.verdict, record.rule or "", record.reason or "", bars, record.figures)


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
        self._slot = settings.brain.decision_slot
        self._files = ChampionFiles(models, self._slot)
        self._brain: TradingBrain = models.brain
        self._journal = journal
        self._ledger = StageLedger(
            models.layout.lifecycle_file,
            self._slot,
            journal=journal,
            alerts=alerts,
            observer=observer,
        )
        self._blackout = Blackout(self._settings.blackout, self._settings.blackout_timezone)
        # The feed's bar spacing: the median of the latest gaps (a night's gap is one of
        # many). A synthetic market's is known; a CSV's once two bars have come (or from the
        # record): no stage starts before it is known.
        self._spacing = settings.market.bar_seconds
        self._spacing_known = settings.market.source == "synthetic"
        self._gaps: deque[float] = deque(maxlen=_GAPS)
        self._previous_bar: float | None = None  # seen by this process (not a record's)
        self._champion: LoadedModel | None = None
        self._champions: list[ModelRef] = []  # that were champion here, newest first
        self._judging: _Judging | None = None
        self._last: Verdict | None = None  # the last verdict given
        self._last_candidate: ModelRef | None = None
        self._failed_under: str | None = None  # the champion's SHA-256 when one was rolled back
        self._seen: str | None = None  # the installed model already handled (SHA-256)
        self._last_bar: float | None = None
        self._resume_after: float | None = None  # the record's last bar, until a later one
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def champion(self) -> LoadedModel:
        if self._champion is None:
            raise LifecycleRefused("the lifecycle has not started (call start())")
        return self._champion

    @property
    def stage(self) -> Stage:
        return Stage.CHAMPION if self._judging is None else self._judging.stage

    # -- start and resume ------------------------------------------------------------------

    async def start(self) -> None:
        """Resume what the record says, else take the serving model as champion."""
        record = await asyncio.to_thread(read_record, self._ledger.path)
        if record is not None and record.slot != self._slot:
            record = None
        if record is not None:
            self._last_bar = self._resume_after = record.last_bar
            self._champions = list(record.champions)
            if record.bar_seconds:
                self._spacing, self._spacing_known = record.bar_seconds, True
            installed = self._files.installed()
            if record.judging and await self._resume(record, installed):
                return
            if not record.judging and await self._keep_champion(record, installed):
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
            self._announce("not_resumed", record.stage, record.last_bar, self._last)
        else:
            self._save(durable=True)
        logger.info(f"🏆 [LIFECYCLE] {self._slot}: version {installed.version} is the champion")
        await self._files.shelve(installed)

    async def _keep_champion(self, record: LifecycleRecord, installed: LoadedModel) -> bool:
        """The record's champion trades, whatever the file on disk holds now: a model the
        judge failed (a restart kept its file from being restored) or that is quarantined is
        rolled back first; any other model installed while no bar came is judged from the
        first bar."""
        if record.champion.sha256 == installed.sha256:
            return False
        champion = await self._files.load(record.champion)
        if champion is None or self._files.is_quarantined(champion.sha256):
            return False
        self._settle(champion)
        if record.verdict is not Outcome.PENDING:
            self._last, self._last_candidate = _verdict_of(record), record.candidate
        failed = record.candidate is not None and record.candidate.sha256 == installed.sha256
        if failed and record.verdict in (Outcome.FAIL, Outcome.INCONCLUSIVE):
            why = f"the judge rolled it back ({record.reason})"
        elif self._files.is_quarantined(installed.sha256):
            why = "it is quarantined"
        else:
            self._seen = champion.sha256  # the first bar sees the installed model arrive
            self._save(durable=True)
            logger.warning(
                f"⚠️ [LIFECYCLE] {installed.version} was installed while no bar came: "
                f"{champion.version} trades, and {installed.version} is judged from the first bar"
            )
            return True
        self._seen = installed.sha256
        logger.warning(
            f"🔁 [LIFECYCLE] {installed.version} is on disk but {why}: {champion.version} "
            "trades, and its file is restored first"
        )
        quarantine = failed and record.verdict is Outcome.FAIL
        await self._files.restore(installed, champion, record.reason or "", quarantine=quarantine)
        self._save(durable=True)
        return True

    async def _resume(self, record: LifecycleRecord, installed: LoadedModel) -> bool:
        candidate = record.candidate
        if candidate is None or candidate.sha256 != installed.sha256:
            return False
        incumbent = await self._files.load(record.champion)
        if incumbent is None:
            return False
        rules = self._rules(record.stage, shadowed=record.shadowed)
        try:
            judge = Judge.from_json(rules, record.judge) if record.judge else Judge(rules)
        except ValueError as error:
            logger.warning(f"⚠️ [LIFECYCLE] The judge's state cannot resume: {error}")
            return False
        self._seen = installed.sha256
        self._settle(incumbent)
        self._judging = _Judging(
            record.stage,
            installed,
            judge,
            record.started_at,
            record.ends_at,
            shadowed=record.shadowed,
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
        return self._resume_after is not None and bar.time <= self._resume_after

    def _note_spacing(self, bar: Bar) -> None:
        if self._previous_bar is not None and bar.time > self._previous_bar:
            self._gaps.append(bar.time - self._previous_bar)
            self._spacing, self._spacing_known = statistics.median(self._gaps), True
        self._previous_bar = bar.time

    def before_decision(self, bar: Bar, book: PaperBook) -> None:
        """Start, end or change a stage at this bar boundary, before the brain decides."""
        if self._already_judged(bar):
            return
        self._resume_after = None
        self._note_spacing(bar)
        installed = self._files.installed()
        if installed.sha256 != self._seen and self._spacing_known:
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
            self._end_shadow(judging, bar, book)

    def _end_shadow(self, judging: _Judging, bar: Bar, book: PaperBook) -> None:
        """A shadow ends as a canary does: on to the canary on a pass (or an inconclusive end
        with ``on_inconclusive: keep``), rolled back otherwise. A shadow that was only a
        blackout's wait (``shadow_minutes`` 0) is no trial of its own: only a fail stops it."""
        verdict = judging.judge.conclude()
        waited = self._settings.shadow_minutes == 0
        keep = self._settings.on_inconclusive == "keep" or waited
        if verdict.outcome is Outcome.FAIL:
            self._fail(judging, verdict, bar.time)
        elif verdict.outcome is Outcome.PASS or keep:
            self._begin(Stage.CANARY, judging.candidate, bar, book, previous=verdict)
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
        if self._already_judged(bar):
            return
        judging = self._judging
        if judging is None or judging.shadow is None:
            self._last_bar = bar.time
            return
        shadow = await judging.shadow.step(self._brain, bar, features, self._journal)
        self._last_bar = bar.time
        if judging is not self._judging:
            return  # a control changed the stage while the shadow decided
        first = judging.started_at is None or bar.time <= judging.started_at
        verdict = judging.judge.observe(
            paired_bar(judging.stage, None if first else marked, decision, closed, shadow)
        )
        if verdict is not None and verdict.outcome is Outcome.FAIL:
            self._fail(judging, verdict, bar.time)
        elif (
            judging.stage is Stage.CANARY
            and judging.ends_at is not None
            and bar.time >= judging.ends_at
        ):
            self._conclude(judging, judging.judge.conclude(), bar.time)
        else:
            if self._ledger.observer is not None:
                self._ledger.observer.set_paired_figures(self._slot, judging.judge.figures)
            if time.monotonic() - self._ledger.saved_at >= _SAVE_SECONDS:
                self._save(durable=False)

    # -- stages ----------------------------------------------------------------------------

    def _arrived(self, installed: LoadedModel, bar: Bar, book: PaperBook) -> None:
        """A model the lifecycle has not seen is installed: judge it, or take it back."""
        self._seen = installed.sha256
        was, judging = self.stage, self._judging
        if any(past.sha256 == installed.sha256 for past in self._champions):
            # A model that was champion here, back (a rollback by hand, or installed again).
            if judging is not None:
                self._last = self._ended(judging, "abandoned", f"{installed.version} restored")
                self._last_candidate = _ref(judging.candidate)
            self._settle(installed)
            self._announce("restored", was, bar.time, self._last if judging else None)
            return
        if judging is not None:
            self._last = self._ended(judging, "superseded", f"{installed.version} arrived")
            self._announce("superseded", was, bar.time, self._last)
        shadow = self._settings.shadow_minutes > 0 or self._blackout.covers(bar.time)
        self._begin(Stage.SHADOW if shadow else Stage.CANARY, installed, bar, book)

    def _ended(self, judging: _Judging, rule: str, why: str) -> Verdict:
        """The inconclusive verdict of a stage that another model cut short."""
        reason = f"{why} before the {judging.stage} of {judging.candidate.version} ended"
        figures = judging.judge.figures
        return Verdict(Outcome.INCONCLUSIVE, rule, reason, int(figures["bars"] or 0), figures)

    def _settle(self, model: LoadedModel) -> None:
        """`model` is the champion, judged no more (and its backup is kept on the shelf)."""
        self._champion = model
        self._judging = None
        self._brain.pin(model)
        self._files.protect(model)
        past = [ref for ref in self._champions if ref.sha256 != model.sha256]
        self._champions = [_ref(model), *past][:PAST_CHAMPIONS]

    def _minutes(self, stage: Stage) -> float:
        settings = self._settings
        return settings.shadow_minutes if stage is Stage.SHADOW else settings.canary_minutes

    def _rules(self, stage: Stage, *, shadowed: bool) -> JudgeRules:
        """The judge's rules for `stage`'s window, at the feed's bar spacing. A candidate that
        goes through a shadow and a canary is judged twice: each spends half of ``alpha``."""
        rules = JudgeRules.of(
            self._settings, minutes=self._minutes(stage), bar_seconds=self._spacing
        )
        if stage is Stage.SHADOW or shadowed:
            rules = rules.spending(rules.alpha / 2)
        return rules

    def _begin(
        self,
        stage: Stage,
        candidate: LoadedModel,
        bar: Bar,
        book: PaperBook,
        *,
        previous: Verdict | None = None,
    ) -> None:
        was = self.stage
        ends_at = bar.time + self._minutes(stage) * 60
        if stage is Stage.SHADOW:
            ends_at = max(ends_at, self._blackout.ends(bar.time) or ends_at)
        shadowed = stage is Stage.CANARY and was is Stage.SHADOW
        rules = self._rules(stage, shadowed=shadowed)
        judging = _Judging(stage, candidate, Judge(rules), bar.time, ends_at, shadowed=shadowed)
        self._judging = judging
        self._last_candidate = _ref(candidate)
        self._begin_paper(judging, bar, book)
        self._announce("started", was, bar.time, previous)

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
        self._announce("promoted", was, at, verdict)
        self._spawn(self._files.shelve(judging.candidate))

    def _fail(
        self, judging: _Judging, verdict: Verdict, at: float | None, *, quarantine: bool = True
    ) -> None:
        """The champion decides again from the next bar; the files follow in the background."""
        was, candidate, champion = judging.stage, judging.candidate, self.champion
        self._last = verdict
        self._judging = None
        self._failed_under = champion.sha256  # the champion the rollback left in place
        self._brain.pin(champion)
        self._announce("rolled_back", was, at, verdict, quarantined=quarantine)
        self._spawn(self._files.restore(candidate, champion, verdict.reason, quarantine=quarantine))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for rollbacks, quarantines and record writes in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)
        await self._ledger.flush()

    async def stop(self) -> None:
        """Let work in flight finish and write the record durably (the host is stopping)."""
        await self.settled()
        if self._champion is not None:
            self._save(durable=True)
            await self._ledger.flush()

    # -- controls (CLI, /admin) -----------------------------------------------------------

    def _check_slot(self, slot: str | None) -> None:
        if slot not in (None, self._slot):
            raise LifecycleRefused(
                f"slot {slot!r} has no lifecycle: only the decision slot {self._slot!r} trades"
            )

    def _by_hand(self, outcome: Outcome, reason: str) -> Verdict:
        judging = self._judging
        figures = dict(judging.judge.figures) if judging is not None else {}
        bars = int(figures.get("bars") or 0)
        return Verdict(outcome=outcome, rule="by_hand", reason=reason, bars=bars, figures=figures)

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
        self._promote(judging, self._by_hand(Outcome.PASS, "promoted by hand"), None)
        return f"promoted {version}: it is the champion of {self._slot}"

    async def reject(self, slot: str | None = None) -> str:
        """Roll back and quarantine the candidate (or, with none, the champion itself)."""
        self._check_slot(slot)
        judging = self._judging
        if judging is not None:
            version = judging.candidate.version
            self._fail(judging, self._by_hand(Outcome.FAIL, "rejected by hand"), self._last_bar)
            return (
                f"rejected {version}: {self.champion.version} decides again; "
                "its files are being restored"
            )
        return await self._reject_champion()

    async def _reject_champion(self) -> str:
        """Put the champion before this one back, and quarantine this one."""
        await self.settled()  # a restore in flight puts the champion's file back first
        if self._judging is not None:  # a candidate arrived meanwhile: that is the one
            return await self.reject()
        champion = self.champion
        if self._failed_under == champion.sha256 and self._last_candidate is not None:
            raise LifecycleRefused(
                f"nothing to reject: {self._last_candidate.version} was already rolled back "
                f"({self._last.reason if self._last else ''}); {champion.version} is the "
                "champion, and stays until a newer model is judged"
            )
        if self._files.installed().sha256 != champion.sha256:
            raise LifecycleRefused(
                f"cannot reject {champion.version} now: its file on disk is being replaced"
            )
        origin = self._files.origin_of(champion)
        restored = await self._restore_previous(champion)
        await self._files.quarantine(champion, "rejected by hand", origin=origin)
        self._last = self._by_hand(Outcome.FAIL, "rejected by hand")
        self._last_candidate = _ref(champion)
        self._seen = restored.sha256  # already handled: no arrival at the next bar
        self._settle(restored)
        self._failed_under = restored.sha256
        self._announce("rolled_back", Stage.CHAMPION, self._last_bar, self._last, quarantined=True)
        return f"rejected {champion.version}: {restored.version} is restored and the champion"

    async def _restore_previous(self, champion: LoadedModel) -> LoadedModel:
        """The newest earlier champion whose backup serves, restored over `champion`."""
        for past in self._champions[1:]:
            backup = await asyncio.to_thread(self._files.backup_holding, past.sha256)
            if backup is None:
                continue
            result = await self._files.roll_back(backup.name, replacing=champion.sha256)
            restored = result.installed.get(self._slot)
            if result.ok and restored is not None:
                return restored
        raise LifecycleRefused(
            f"cannot reject {champion.version}: no earlier champion is on the shelf to go "
            "back to (`python -m app rollback` restores any backup, judged as a new model)"
        )

    # -- what it says ----------------------------------------------------------------------

    def _record(self) -> LifecycleRecord:
        judging, last, champion = self._judging, self._last, self.champion
        spacing = self._spacing if self._spacing_known else None
        if judging is None:
            return LifecycleRecord(
                slot=self._slot,
                stage=Stage.CHAMPION,
                champion=_ref(champion),
                candidate=self._last_candidate,
                verdict=last.outcome if last is not None else Outcome.PENDING,
                rule=last.rule if last is not None else None,
                reason=last.reason if last is not None else None,
                figures=dict(last.figures) if last is not None else {},
                last_bar=self._last_bar,
                champions=self._champions,
                bar_seconds=spacing,
            )
        return LifecycleRecord(
            slot=self._slot,
            stage=judging.stage,
            champion=_ref(champion),
            candidate=_ref(judging.candidate),
            started_at=judging.started_at,
            ends_at=judging.ends_at,
            figures=dict(judging.judge.figures),
            judge=judging.judge.to_json(),
            shadowed=judging.shadowed,
            last_bar=self._last_bar,
            champions=self._champions,
            bar_seconds=spacing,
        )

    def report(self) -> dict[str, Any]:
        """``status --json``'s ``models.<slot>.lifecycle``, live."""
        if self._champion is None:  # not started (yet)
            return describe(None, mode=self._settings.mode)
        view = describe(self._record(), mode=self._settings.mode)
        view["updated_at"] = self._ledger.updated_at
        return view

    def _save(self, *, durable: bool) -> None:
        self._ledger.save(self._record(), durable=durable)

    def _announce(
        self,
        kind: str,
        was: Stage,
        at: float | None,
        verdict: Verdict | None,
        *,
        quarantined: bool = False,
    ) -> None:
        """Save the record and tell everyone about a change of stage."""
        judging = self._judging
        if kind == "started" and judging is not None:
            why = f"trading as a canary until {market_time(judging.ends_at)}"
            if judging.stage is Stage.SHADOW:
                why = f"deciding in shadow until {market_time(judging.ends_at)}"
                if self._blackout.covers(at or 0.0):
                    why += f" (the blackout {self._blackout.description})"
        elif kind == "rolled_back" and verdict is not None:
            action = "rolled back and quarantined" if quarantined else "rolled back"
            why = f"{action}: {verdict.reason}"
        elif kind == "promoted" and verdict is not None:
            why = f"promoted: {verdict.reason}"
        elif kind == "restored":
            why = f"{self.champion.version} restored from a backup: it was champion before"
        else:
            why = verdict.reason if verdict is not None else kind
        named = judging.candidate.version if judging is not None else None
        if named is None and self._last_candidate is not None:
            named = self._last_candidate.version
        outcome = str(verdict.outcome) if verdict is not None else str(Outcome.PENDING)
        self._save(durable=True)
        change = StageChange(
            kind, self._slot, was, self.stage, named, self.champion.version, outcome, why
        )
        self._ledger.announce(change, verdict, at=at, trading=self._brain.snapshot.deciding.version)
