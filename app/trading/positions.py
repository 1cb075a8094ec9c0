"""Paper positions and what they earn: pure functions over arrays, and a bar-by-bar book.

The decision on bar t sets the position held over bar t+1 (sell -1, hold 0, buy +1). The
per-bar net return of decision t is ``position[t] * (close[t+1] / close[t] - 1)`` minus
``cost_bps / 10000 * |position[t] - position[t-1]|`` (the position before the first decision is
flat). A trade is a maximal run of bars holding the same non-zero position; its net return is its
bars' gross returns less the cost of entering it and of leaving it (a flip from long to short
pays one unit to leave and one to enter). Only closed trades count towards the win rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from app.brain.decision import ACTIONS, Action

POSITION_OF: dict[str, int] = {"sell": -1, "hold": 0, "buy": 1}
SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True, slots=True)
class Performance:
    """How a series of decisions traded (the figures `replay` and `status` print)."""

    decisions: int
    trades: int
    win_rate: float | None  # None until a trade has closed
    gross_return: float
    net_return: float
    max_drawdown: float
    sharpe: float
    actions: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def positions_of(actions: Sequence[str] | np.ndarray) -> np.ndarray:
    """Actions as positions (-1, 0, +1), int8."""
    if isinstance(actions, np.ndarray) and actions.dtype.kind in "iu":
        return actions.astype(np.int8)
    return np.fromiter((POSITION_OF[a] for a in actions), dtype=np.int8, count=len(actions))


def bar_returns(
    positions: np.ndarray, closes: np.ndarray, cost_bps: float, *, previous: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gross and net return of each decision that has a next bar.

    `positions[i]` is the decision on the bar whose close is `closes[i]`; `closes` may be one
    longer (the bar after the last decision) or the same length (the last decision has no
    outcome yet). `previous`: the position held before the first decision.
    """
    held = positions.astype(np.float64)
    count = min(len(held), len(closes) - 1)
    held = held[:count]
    moves = closes[1 : count + 1] / closes[:count] - 1.0
    gross = held * moves
    before = np.concatenate(([float(previous)], positions[: max(count - 1, 0)].astype(np.float64)))
    costs = cost_bps / 10000.0 * np.abs(held - before[:count])
    return gross, gross - costs


@dataclass(frozen=True, slots=True)
class Trade:
    position: int
    start: int  # index of the first decision holding it
    end: int  # index one past the last
    net_return: float
    closed: bool


@dataclass(frozen=True, slots=True)
class Trades:
    """Every trade as columns: position, first and one-past-last decision, net return, closed."""

    position: np.ndarray
    start: np.ndarray
    end: np.ndarray
    net_return: np.ndarray
    closed: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    def as_list(self) -> list[Trade]:
        return [
            Trade(int(p), int(s), int(e), float(n), bool(c))
            for p, s, e, n, c in zip(
                self.position, self.start, self.end, self.net_return, self.closed, strict=True
            )
        ]


def trade_table(
    positions: np.ndarray, gross: np.ndarray, cost_bps: float, *, previous: int = 0
) -> Trades:
    """The maximal runs of one non-zero position over the decisions that have outcomes."""
    count = len(gross)
    held = positions[:count].astype(np.int64)
    if count == 0:
        empty = np.empty(0, np.int64)
        return Trades(empty, empty, empty, np.empty(0), np.empty(0, bool))
    unit = cost_bps / 10000.0
    changes = np.flatnonzero(np.diff(held)) + 1
    starts = np.concatenate(([0], changes))
    ends = np.concatenate((changes, [count]))
    sums = np.add.reduceat(gross, starts)
    run = held[starts]
    before = np.where(starts == 0, previous, held[starts - 1])
    entry = unit * np.abs(run) * (before != run)
    # Closed when a later decision (possibly one with no outcome yet) left the position.
    later = np.asarray(positions, dtype=np.int64)[np.minimum(ends, len(positions) - 1)]
    closed = (ends < len(positions)) & (later != run)
    exits = unit * np.abs(run) * closed
    trading = run != 0
    return Trades(
        run[trading],
        starts[trading],
        ends[trading],
        (sums - entry - exits)[trading],
        closed[trading],
    )


def trades_of(
    positions: np.ndarray, gross: np.ndarray, cost_bps: float, *, previous: int = 0
) -> list[Trade]:
    """:func:`trade_table` as a list of trades."""
    return trade_table(positions, gross, cost_bps, previous=previous).as_list()


def max_drawdown(net: np.ndarray, equity: np.ndarray | None = None) -> float:
    """The largest fall of the compounded equity curve from its running peak, as a fraction.

    `equity`: ``cumprod(1 + net)``, when the caller has it already.
    """
    if len(net) == 0:
        return 0.0
    if equity is None:
        equity = np.cumprod(1.0 + net)
    peaks = np.maximum.accumulate(np.concatenate(([1.0], equity)))[1:]
    return float(np.max(1.0 - equity / peaks))


def sharpe(net: np.ndarray, bar_seconds: float) -> float:
    """Mean over standard deviation of per-bar net returns, annualised by the bar spacing."""
    if len(net) < 2:
        return 0.0
    spread = float(np.std(net, ddof=1))
    if spread == 0 or not math.isfinite(spread):
        return 0.0
    return float(np.mean(net)) / spread * math.sqrt(SECONDS_PER_YEAR / max(bar_seconds, 1e-9))


def action_counts(positions: np.ndarray) -> dict[str, int]:
    counts = np.bincount(positions.astype(np.int64) + 1, minlength=3)
    return {action: int(counts[i]) for i, action in enumerate(ACTIONS)}


def performance(
    positions: np.ndarray,
    closes: np.ndarray,
    *,
    cost_bps: float,
    bar_seconds: float,
) -> Performance:
    """Every figure for decisions `positions` on the bars closing at `closes`."""
    gross, net = bar_returns(positions, closes, cost_bps)
    trades = trade_table(positions, gross, cost_bps)
    return summarise(
        net,
        gross,
        trades,
        decisions=len(positions),
        bar_seconds=bar_seconds,
        actions=action_counts(positions),
    )


def summarise(
    net: np.ndarray,
    gross: np.ndarray,
    trades: Trades,
    *,
    decisions: int,
    bar_seconds: float,
    actions: dict[str, int],
    equity: np.ndarray | None = None,
) -> Performance:
    closed = trades.net_return[trades.closed]
    wins = int(np.count_nonzero(closed > 0))
    return Performance(
        decisions=decisions,
        trades=len(trades),
        win_rate=wins / len(closed) if len(closed) else None,
        gross_return=float(np.sum(gross)),
        net_return=float(np.sum(net)),
        max_drawdown=max_drawdown(net, equity),
        sharpe=sharpe(net, bar_seconds),
        actions=actions,
    )


@dataclass(frozen=True, slots=True)
class BarOutcome:
    """What the decision on the previous bar earned over this one."""

    decided_at: float  # market time of the deciding bar
    position: int
    gross_return: float
    net_return: float


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A paper trade the book has closed, in market time."""

    position: int
    opened_at: float
    closed_at: float
    net_return: float


class PaperBook:
    """Positions bar by bar, as the host trades them: the same sums as :func:`bar_returns`."""

    def __init__(self, cost_bps: float) -> None:
        self._unit = cost_bps / 10000.0
        self._position = 0
        self._before = 0  # position held before the current one was taken
        self._close: float | None = None
        self._decided_at = 0.0
        self._trade_start = 0.0
        self._trade_sum = 0.0
        self._trade_entry = 0.0

    @property
    def position(self) -> int:
        return self._position

    def mark(self, close: float) -> BarOutcome | None:
        """A new bar closed at `close`: what the position taken on the previous bar earned."""
        if self._close is None:
            return None
        gross = self._position * (close / self._close - 1.0)
        cost = self._unit * abs(self._position - self._before)
        self._trade_sum += gross
        return BarOutcome(self._decided_at, self._position, gross, gross - cost)

    def take(self, action: Action, close: float, at: float) -> ClosedTrade | None:
        """The decision on the bar closing at `close`; the trade it closes, if any."""
        position = POSITION_OF[action]
        closed = None
        if self._position not in (position, 0):
            net = self._trade_sum - self._trade_entry - self._unit * abs(self._position)
            closed = ClosedTrade(self._position, self._trade_start, at, net)
        if position != self._position:
            self._trade_sum = 0.0
            self._trade_entry = self._unit * abs(position)
            self._trade_start = at
        self._before, self._position = self._position, position
        self._close = close
        self._decided_at = at
        return closed
