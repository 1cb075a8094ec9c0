"""The host's trading loop: bars in, features, a decision, a paper position, the journal.

Per bar, in market time: the previous decision's position is marked to this bar's close (its
outcome is journaled, attributed to the version that decided), the features are updated, and,
once warm, the brain decides and the decision sets the position held over the next bar.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.decision import Decision
from app.brain.health import DecisionHealth
from app.trading.bars import Bar, MarketDataError
from app.trading.features import FeatureEngine, feature_indices
from app.trading.journal import DecisionJournal
from app.trading.market import BarFeed
from app.trading.positions import BarOutcome, ClosedTrade, PaperBook

Sleep = Callable[[float], Awaitable[bool]]  # sleeps; True when the host is stopping
_YIELD_EVERY = 64  # bars between yields to the event loop when replaying as fast as possible


class TradingObserver(Protocol):
    """Metrics for the paper positions (``ProductionMonitoringService``)."""

    def record_paper_bar(
        self, slot: str, version: str, position: int, net_return: float
    ) -> None: ...

    def record_paper_trade(self, slot: str, version: str, net_return: float) -> None: ...


class BarWatcher(Protocol):
    """The model lifecycle's view of every bar the loop decides on (``app.lifecycle``)."""

    def before_decision(self, bar: Bar, book: PaperBook) -> None:
        """The bar is marked, its features ready; the brain has not decided yet."""

    async def after_decision(
        self,
        bar: Bar,
        features: np.ndarray,
        decision: Decision | None,
        marked: BarOutcome | None,
        closed: ClosedTrade | None,
    ) -> None:
        """The decision is taken (None: it failed): what it marked over this bar and closed."""


class TradingLoop:
    """Trades the brain on paper over a feed of bars."""

    def __init__(
        self,
        brain: TradingBrain,
        feed: BarFeed,
        *,
        cost_bps: float,
        bars_per_second: float = 0.0,
        log_every: int = 10,  # one terminal line per this many bars (once deciding)
        journal: DecisionJournal | None = None,
        observer: TradingObserver | None = None,
        features: Sequence[str] | None = None,
        resume_after: float | None = None,
        health: DecisionHealth | None = None,
        watcher: BarWatcher | None = None,
    ) -> None:
        """`resume_after`: the newest bar time already journaled (a restarted host): earlier
        bars only warm the features up, so no bar is traded, or counted, twice."""
        self._brain = brain
        self._feed = feed
        self._interval = 1.0 / bars_per_second if bars_per_second > 0 else 0.0
        self._log_every = max(1, log_every)
        self._journal = journal
        self._observer = observer
        self._slot = brain.settings.decision_slot
        self._engine = FeatureEngine()
        self._columns = feature_indices(features or brain.settings.features)
        self._book = PaperBook(cost_bps)
        self._version = ""  # the version whose decision the open position follows
        self._trade_version = ""
        self._resume_after = resume_after
        self._health = health
        self._deciding = False  # health is watched from the first decision on (after warm-up)
        self._watcher = watcher
        self._marked: BarOutcome | None = None  # what this bar's mark earned
        self._closed: ClosedTrade | None = None  # the trade this bar's decision closed
        self.bars = 0
        self.skipped = 0
        self.decisions = 0
        self.net_return = 0.0
        self.last_decision: Decision | None = None

    @property
    def position(self) -> int:
        return self._book.position

    def step(self, bar: Bar) -> Decision | None:
        """One bar: mark, update features, decide once warm. Returns the decision, if any."""
        features = self._features(bar)
        if features is None:
            return None
        return self._took(bar, features, self._brain.decide(features))

    async def step_async(self, bar: Bar) -> Decision | None:
        """:meth:`step` as the host runs it: a slow model decides off the event loop, and a
        failed decision is counted and logged (once per streak) while the loop goes on."""
        features = self._features(bar)
        if features is None:
            return None
        health = self._health
        if health is not None and not self._deciding:
            self._deciding = True
            health.started()
        watcher = self._watcher
        if watcher is not None:
            watcher.before_decision(bar, self._book)
        taken: Decision | None = None
        try:
            decision = await self._brain.decide_async(features)
        except Exception as error:
            if health is None or health.failed(error):
                logger.opt(exception=error).error(f"❌ [TRADING] A decision failed: {error}")
        else:
            if health is not None:
                health.decided()
            taken = self._took(bar, features, decision)
        if watcher is not None:
            await watcher.after_decision(bar, features, taken, self._marked, self._closed)
        return taken

    def _features(self, bar: Bar) -> np.ndarray | None:
        """Mark the open position and update the features; the row to decide on, once warm."""
        self.bars += 1
        if self._resume_after is not None and self._already_traded(bar):
            return None
        self._mark(bar)
        row = self._engine.update(bar)
        if row is None:
            return None
        return np.array([[row[i] for i in self._columns]], dtype=np.float32)

    def _took(self, bar: Bar, features: np.ndarray, decision: Decision) -> Decision:
        self._take(bar, features, decision)
        if self.bars % self._log_every == 0:
            self._say(bar, decision)
        return decision

    def _already_traded(self, bar: Bar) -> bool:
        """Bars up to `resume_after` only warm the features up."""
        assert self._resume_after is not None
        if bar.time <= self._resume_after:
            self.skipped += 1
            self._engine.update(bar)
            return True
        self._resume_after = None
        if self.skipped:
            logger.info(f"📈 [TRADING] Resuming after {self.skipped} bars already in the journal")
        return False

    def _mark(self, bar: Bar) -> None:
        """What the previous decision's position earned over this bar."""
        outcome = self._book.mark(bar.close)
        self._marked, self._closed = outcome, None
        if outcome is None:
            return
        self.net_return += outcome.net_return
        if self._journal is not None:
            self._journal.record_bar(outcome, self._version)
        if self._observer is not None:
            self._observer.record_paper_bar(
                self._slot, self._version, outcome.position, outcome.net_return
            )

    def _take(self, bar: Bar, features: np.ndarray, decision: Decision) -> None:
        """The decision sets the position over the next bar; journal it and any closed trade."""
        version = decision.versions.get(self._slot, "")
        self.decisions += 1
        self.last_decision = decision
        opened_by = self._trade_version
        before = self._book.position
        closed = self._book.take(decision.action, bar.close, bar.time)
        self._closed = closed
        if self._book.position not in (before, 0):
            self._trade_version = version
        self._version = version
        journal = self._journal
        if journal is not None:
            journal.record_decision(bar.time, bar.close, features[0], decision)
            if closed is not None:
                journal.record_trade(closed, opened_by)
        if closed is not None and self._observer is not None:
            self._observer.record_paper_trade(self._slot, opened_by, closed.net_return)

    def _say(self, bar: Bar, decision: Decision) -> None:
        when = datetime.fromtimestamp(bar.time, UTC).strftime("%Y-%m-%d %H:%M")
        versions = ", ".join(f"{slot}={v}" for slot, v in decision.versions.items())
        # A hold under the threshold says which action it was: "hold (buy 0.52 < 0.65)".
        said = decision.describe(self._brain.settings.confidence_threshold)
        logger.bind(
            action=decision.action,
            best_action=decision.best_action,
            confidence=decision.confidence,
            slot=self._slot,
            version=decision.versions.get(self._slot),
        ).info(
            f"📈 [TRADING] {when} {said} "
            f"position {self._book.position:+d}, net {self.net_return:+.3%} over "
            f"{self.decisions} decisions, by {versions}"
        )

    async def run(self, sleep: Sleep) -> None:
        """Trade every bar of the feed, paced at ``bars_per_second``, until it ends or stops."""
        logger.info(f"📈 [TRADING] Trading on paper on {self._feed.name}")
        next_at = time.monotonic()
        try:
            for bar in self._feed.bars:
                await self.step_async(bar)
                if self._interval and self._resume_after is None:
                    next_at = max(next_at + self._interval, time.monotonic() - self._interval)
                    if await sleep(max(0.0, next_at - time.monotonic())):
                        return
                elif self.bars % _YIELD_EVERY == 0 and await sleep(0):
                    return  # bars already journaled are skipped unpaced
        except MarketDataError as error:
            logger.error(f"❌ [TRADING] The feed stopped: {error}")
            return
        except Exception as error:  # the host's other jobs go on; say why trading stopped
            logger.opt(exception=error).error(
                f"❌ [TRADING] The trading loop stopped after {self.bars} bars: {error}"
            )
            return
        finally:
            if self._health is not None:
                self._health.stopped()  # no job, nothing to be unready about
        self._ended()

    def _ended(self) -> None:
        notes = self._feed.report.notes() if self._feed.report is not None else []
        for note in notes:
            logger.warning(f"⚠️ [TRADING] {self._feed.name}: {note}")
        logger.info(
            f"📉 [TRADING] End of {self._feed.name} after {self.bars} bars and "
            f"{self.decisions} decisions (net {self.net_return:+.3%}); the feed stops, "
            "the host keeps serving"
        )
