"""Replay: the serving model and a candidate over the same bars, side by side.

Both models score the whole feature matrix in one batched call each; actions, positions and
figures are then array arithmetic (``positions.performance``), so a year of hourly bars replays
in milliseconds once the features are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.trading.bars import BarSeries
from app.trading.features import WARMUP_BARS, feature_matrix
from app.trading.figures import RecordedBars
from app.trading.positions import (
    Performance,
    action_counts,
    bar_returns,
    summarise,
    trade_table,
)

# Scores a float32 [rows, features] matrix: probabilities [rows, 3] (sell, hold, buy).
BatchScorer = Callable[[np.ndarray], Any]


@dataclass(frozen=True, slots=True)
class ReplayInput:
    """What both models see: one feature row per decision, with its bar's time and close."""

    bars: int
    times: np.ndarray
    closes: np.ndarray
    features: np.ndarray

    @classmethod
    def from_bars(cls, series: BarSeries) -> ReplayInput:
        matrix, first = feature_matrix(series)
        return cls(len(series), series.time[first:], series.close[first:], matrix)

    @classmethod
    def from_journal(cls, recorded: RecordedBars) -> ReplayInput:
        return cls(len(recorded.times), recorded.times, recorded.closes, recorded.features)

    def bar_seconds(self) -> float:
        if len(self.times) < 2:
            return 60.0
        return float(np.median(np.diff(self.times))) or 60.0


@dataclass(frozen=True, slots=True)
class ModelRun:
    """One model's decisions over the replay and how they traded."""

    version: str
    positions: np.ndarray
    performance: Performance
    equity: np.ndarray  # compounded net equity after each decision with an outcome

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, **self.performance.to_json()}


@dataclass(frozen=True, slots=True)
class ReplayReport:
    bars: int
    bar_seconds: float
    times: np.ndarray
    incumbent: ModelRun
    candidate: ModelRun | None

    @property
    def agreement(self) -> float | None:
        """The fraction of decisions on which both models took the same action."""
        if self.candidate is None or len(self.incumbent.positions) == 0:
            return None
        return float(np.mean(self.incumbent.positions == self.candidate.positions))

    def to_json(self) -> dict[str, Any]:
        return {
            "bars": self.bars,
            "agreement": self.agreement,
            "incumbent": self.incumbent.to_json(),
            "candidate": None if self.candidate is None else self.candidate.to_json(),
        }


def positions_from(probabilities: Any, threshold: float) -> np.ndarray:
    """The brain's rule, batched: the most probable action, hold below `threshold`."""
    probs = np.asarray(probabilities)
    if probs.ndim != 2 or probs.shape[1] != 3:
        raise ValueError(f"model output has shape {probs.shape}, expected [rows, 3]")
    sell, hold, buy = probs[:, 0], probs[:, 1], probs[:, 2]
    best = np.maximum(np.maximum(sell, hold), buy)
    # The first most probable action, as decide() picks it (column-wise: argmax over a
    # 3-wide axis is several times slower).
    positions: np.ndarray = np.where(sell == best, -1, np.where(hold == best, 0, 1)).astype(np.int8)
    # Compared in float64, as decide() compares a Python float: widening is exact.
    positions[best.astype(np.float64) < threshold] = 0
    return positions


def run_model(
    version: str,
    scorer: BatchScorer,
    replayed: ReplayInput,
    *,
    threshold: float,
    cost_bps: float,
    bar_seconds: float | None = None,
) -> ModelRun:
    positions = (
        positions_from(scorer(replayed.features), threshold)
        if len(replayed.features)
        else np.empty(0, np.int8)
    )
    gross, net = bar_returns(positions, replayed.closes, cost_bps)
    equity = np.cumprod(1.0 + net)
    figures = summarise(
        net,
        gross,
        trade_table(positions, gross, cost_bps),
        decisions=len(positions),
        bar_seconds=replayed.bar_seconds() if bar_seconds is None else bar_seconds,
        actions=action_counts(positions),
        equity=equity,
    )
    return ModelRun(version, positions, figures, equity)


def replay(
    replayed: ReplayInput,
    incumbent: tuple[str, BatchScorer],
    candidate: tuple[str, BatchScorer] | None,
    *,
    threshold: float,
    cost_bps: float,
) -> ReplayReport:
    """Both models over the same decisions."""
    spacing = replayed.bar_seconds()

    def run(model: tuple[str, BatchScorer]) -> ModelRun:
        return run_model(
            *model, replayed, threshold=threshold, cost_bps=cost_bps, bar_seconds=spacing
        )

    first = run(incumbent)
    second = None if candidate is None else run(candidate)
    return ReplayReport(replayed.bars, spacing, replayed.times, first, second)


def table(report: ReplayReport) -> str:
    """The side-by-side table `replay` prints without --json."""
    runs = [("incumbent", report.incumbent)]
    if report.candidate is not None:
        runs.append(("candidate", report.candidate))
    rows = [("", *(name for name, _ in runs)), ("version", *(run.version for _, run in runs))]

    def add(label: str, render: Callable[[Performance], str]) -> None:
        rows.append((label, *(render(run.performance) for _, run in runs)))

    add("decisions", lambda p: f"{p.decisions:,}")
    add("trades", lambda p: f"{p.trades:,}")
    add("win rate", lambda p: "-" if p.win_rate is None else f"{p.win_rate:.1%}")
    add("gross return", lambda p: f"{p.gross_return:+.2%}")
    add("net return", lambda p: f"{p.net_return:+.2%}")
    add("max drawdown", lambda p: f"{p.max_drawdown:.2%}")
    add("sharpe", lambda p: f"{p.sharpe:.2f}")
    add(
        "sell/hold/buy",
        lambda p: "/".join(f"{p.actions[a]:,}" for a in ("sell", "hold", "buy")),
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    agreement = report.agreement
    lines.append(f"{report.bars:,} bars, first decision at bar {WARMUP_BARS}")
    if agreement is not None:
        lines[-1] += f"; the models agree on {agreement:.1%} of decisions"
    return "\n".join(lines)
