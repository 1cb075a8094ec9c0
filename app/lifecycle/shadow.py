"""A model deciding beside the trading one, on the same rows, trading on paper only; and the
paired bar the judge sees of the two.

Its paper book starts as a copy of the trading book at the bar the stage starts (the same
position, so the first change of position costs both the same), and from then on is marked and
takes decisions exactly as the trading loop's book does: counterfactual returns computed as
the champion's are. It never places or reports an order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.decision import Decision, held
from app.brain.models import LoadedModel
from app.lifecycle.judge import PairedBar
from app.lifecycle.record import Stage
from app.trading.bars import Bar
from app.trading.journal import DecisionJournal
from app.trading.positions import BarOutcome, ClosedTrade, PaperBook


@dataclass(frozen=True, slots=True)
class ShadowStep:
    """The shadow model's decision on a bar, what its paper position earned over the bar (None
    on the first), and the trade the decision closed."""

    decision: Decision
    marked: BarOutcome | None
    closed: ClosedTrade | None


class Shadow:
    """`model` on paper, from the bar `started_at` on."""

    def __init__(self, model: LoadedModel, trading_book: PaperBook, started_at: float) -> None:
        self.model = model
        self._book = copy.copy(trading_book)  # already marked for the starting bar
        self._started_at = started_at
        self._failing = False  # said once per streak of failed decisions

    @property
    def position(self) -> int:
        return self._book.position

    async def step(
        self,
        brain: TradingBrain,
        bar: Bar,
        features: np.ndarray,
        journal: DecisionJournal | None,
    ) -> ShadowStep:
        """Mark the previous decision, decide on the same row as the trading model, take it;
        journaled with role ``shadow``."""
        marked = None if bar.time <= self._started_at else self._book.mark(bar.close)
        try:
            decision = await brain.decide_with_async(self.model, features)
        except Exception as error:  # the model's failure, judged as an invalid output
            if not self._failing:
                logger.error(
                    f"❌ [LIFECYCLE] {self.model.version} failed to decide in shadow: {error}"
                )
            self._failing = True
            decision = held({**brain.snapshot.versions, self.model.slot: self.model.version})
        else:
            self._failing = False
        closed = self._book.take(decision.action, bar.close, bar.time)
        if journal is not None:
            step = ShadowStep(decision, marked, closed)
            self._journal(journal, bar, features, step)
            return step
        return ShadowStep(decision, marked, closed)

    def _journal(
        self, journal: DecisionJournal, bar: Bar, features: np.ndarray, step: ShadowStep
    ) -> None:
        version = self.model.version
        journal.record_decision(bar.time, bar.close, features[0], step.decision, role="shadow")
        if step.marked is not None:
            journal.record_bar(step.marked, version, role="shadow")
        if step.closed is not None:
            journal.record_trade(step.closed, version, role="shadow")


def paired_bar(
    stage: Stage,
    marked: BarOutcome | None,
    decision: Decision | None,
    closed: ClosedTrade | None,
    shadow: ShadowStep,
) -> PairedBar:
    """The bar as the judge sees it: the candidate (trading in a canary, on paper in a
    shadow) against the incumbent. `marked` is None on the stage's first bar (what the
    trading book earned then was decided before the stage)."""
    trading_return = 0.0 if marked is None else marked.net_return
    trading_position = None if marked is None else marked.position
    paper_return = 0.0 if shadow.marked is None else shadow.marked.net_return
    paper_position = None if shadow.marked is None else shadow.marked.position
    # A decision that failed (the model raised) holds the position: an invalid output.
    action = decision.action if decision is not None else "hold"
    valid = decision.valid if decision is not None else False
    if stage is Stage.CANARY:
        return PairedBar(
            trading_return,
            paper_return,
            action,
            shadow.decision.action,
            valid,
            closed is not None,
            candidate_position=trading_position,
            incumbent_position=paper_position,
        )
    return PairedBar(
        paper_return,
        trading_return,
        shadow.decision.action,
        action,
        shadow.decision.valid,
        shadow.closed is not None,
        candidate_position=paper_position,
        incumbent_position=trading_position,
    )
