"""`python -m app replay`: load the inputs and the candidate, replay, say what happened."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.brain.brain import TradingBrain
from app.brain.models import DecisionFeed
from app.errors import AppError
from app.settings import Settings
from app.trading.csvbars import load_csv_bars
from app.trading.features import feature_indices
from app.trading.figures import recorded_bars
from app.trading.journal import DecisionJournal
from app.trading.replay import BatchScorer, ReplayInput, ReplayReport, replay


class ReplayRefused(AppError):
    """Replay cannot run: no bars, no recorded decisions, or a candidate that cannot serve."""


@dataclass(frozen=True, slots=True)
class ReplayRun:
    report: ReplayReport
    notes: list[str]


def scorer_of(feed: DecisionFeed) -> BatchScorer:
    """One batched ``session.run`` over the whole feature matrix."""

    def score(matrix: np.ndarray) -> Any:
        return feed.session.run(feed.output_names, {feed.input_name: matrix})[0]

    return score


def _inputs(
    settings: Settings, bars: Path | None, journal: str | None
) -> tuple[ReplayInput, list[str]]:
    if bars is not None:
        series, report = load_csv_bars(bars)
        columns = feature_indices(settings.brain.features)
        replayed = ReplayInput.from_bars(series)
        matrix = np.ascontiguousarray(replayed.features[:, columns])
        replayed = ReplayInput(replayed.bars, replayed.times, replayed.closes, matrix)
        if len(matrix) == 0:
            raise ReplayRefused(f"{bars} has {len(series)} bars: too few for the features' warm-up")
        return replayed, report.notes()
    path = Path(journal) if journal else settings.journal_path
    if not path.is_file():
        raise ReplayRefused(f"no decision journal at {path}")
    recorded = recorded_bars(DecisionJournal(path), len(settings.brain.features))
    if len(recorded.times) == 0:
        raise ReplayRefused(f"the journal at {path} has no recorded champion decisions")
    return ReplayInput.from_journal(recorded), []


def _candidate(brain: TradingBrain, path: Path) -> tuple[str, BatchScorer]:
    """The candidate validated as any model offered to the brain (budgets included)."""
    slot = brain.settings.decision_slot
    model = brain.load_model(slot, path, serving=brain.snapshot.models[slot])
    return model.version, scorer_of(DecisionFeed.of(model))


async def replay_models(
    brain: TradingBrain,
    settings: Settings,
    *,
    bars: Path | None,
    journal: str | None,
    candidate: Path | None,
) -> ReplayRun:
    """Replay the serving model (and `candidate`) over the bars or the journal (blocking work
    in a thread)."""

    def work() -> ReplayRun:
        replayed, notes = _inputs(settings, bars, journal)
        snapshot = brain.snapshot
        incumbent = (snapshot.versions[snapshot.decision_slot], scorer_of(snapshot.decision))
        challenger = None if candidate is None else _candidate(brain, candidate)
        report = replay(
            replayed,
            incumbent,
            challenger,
            threshold=settings.brain.confidence_threshold,
            cost_bps=settings.trading.cost_bps,
        )
        return ReplayRun(report, notes)

    return await asyncio.to_thread(work)
