"""Paper positions and their figures: DESIGN.md's definitions, by example and by property."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.trading.positions import (
    PaperBook,
    bar_returns,
    max_drawdown,
    performance,
    positions_of,
    sharpe,
    trades_of,
)

MINUTE = 60.0
MINUTES_PER_YEAR = 365.25 * 24 * 60


def test_a_worked_example() -> None:
    closes = np.array([100.0, 101.0, 99.99, 99.99, 100.99, 100.0])
    positions = positions_of(["buy", "sell", "sell", "hold", "buy"])

    gross, net = bar_returns(positions, closes, cost_bps=10)

    assert gross == pytest.approx([0.01, 0.01, 0.0, 0.0, 100.0 / 100.99 - 1])
    # Costs: 1 unit to go long, 2 to flip short, none to stay, 1 to go flat, 1 to go long.
    assert gross - net == pytest.approx([0.001, 0.002, 0.0, 0.001, 0.001])
    trades = trades_of(positions, gross, 10)
    assert [(t.position, t.start, t.end, t.closed) for t in trades] == [
        (1, 0, 1, True),
        (-1, 1, 3, True),
        (1, 4, 5, False),  # still open at the end
    ]
    # A trade pays its entry and its exit: the long paid 0.001 in and 0.001 out.
    assert trades[0].net_return == pytest.approx(0.01 - 0.002)
    assert trades[1].net_return == pytest.approx(0.01 - 0.002)
    figures = performance(positions, closes, cost_bps=10, bar_seconds=MINUTE)
    assert figures.decisions == 5
    assert figures.trades == 3
    assert figures.win_rate == 1.0  # two closed trades, both won; the open one is not counted
    assert figures.actions == {"sell": 2, "hold": 1, "buy": 2}
    assert figures.net_return == pytest.approx(float(np.sum(net)))


def test_the_last_decision_has_no_outcome_until_the_next_bar() -> None:
    gross, net = bar_returns(positions_of(["buy", "buy"]), np.array([100.0, 110.0]), 0)
    assert gross.tolist() == pytest.approx([0.1])
    assert len(net) == 1


def test_max_drawdown_is_on_the_compounded_equity_curve() -> None:
    net = np.array([0.10, -0.5, 0.2, -0.1])
    # Equity 1.1, 0.55, 0.66, 0.594: the peak 1.1 to 0.55 is the worst fall.
    assert max_drawdown(net) == pytest.approx(0.5)
    assert max_drawdown(np.array([-0.1])) == pytest.approx(0.1)  # from the starting equity
    assert max_drawdown(np.array([0.1, 0.1])) == 0.0


def test_sharpe_is_annualised_by_the_bar_spacing() -> None:
    net = np.array([0.001, -0.0005, 0.002, 0.0])
    per_bar = np.mean(net) / np.std(net, ddof=1)
    assert sharpe(net, MINUTE) == pytest.approx(per_bar * math.sqrt(MINUTES_PER_YEAR))
    assert sharpe(net, 3600) == pytest.approx(per_bar * math.sqrt(MINUTES_PER_YEAR / 60))
    assert sharpe(np.zeros(10), MINUTE) == 0.0  # no spread: 0, not NaN


actions = st.lists(st.sampled_from(["sell", "hold", "buy"]), min_size=1, max_size=200)


@st.composite
def market(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    chosen = draw(actions)
    moves = draw(
        arrays(
            np.float64,
            len(chosen),
            elements=st.floats(-0.05, 0.05, allow_nan=False, allow_subnormal=False),
        )
    )
    closes = 100.0 * np.cumprod(np.concatenate(([1.0], 1.0 + moves)))
    return positions_of(chosen), closes


@settings(max_examples=200, deadline=None)
@given(market(), st.floats(0, 50))
def test_an_identical_model_gives_identical_figures(
    case: tuple[np.ndarray, np.ndarray], cost: float
) -> None:
    positions, closes = case
    first = performance(positions, closes, cost_bps=cost, bar_seconds=MINUTE)
    second = performance(positions.copy(), closes.copy(), cost_bps=cost, bar_seconds=MINUTE)
    assert first == second


@settings(max_examples=200, deadline=None)
@given(market(), st.floats(0, 50))
def test_every_action_inverted_negates_the_gross_return(
    case: tuple[np.ndarray, np.ndarray], cost: float
) -> None:
    positions, closes = case
    straight = performance(positions, closes, cost_bps=cost, bar_seconds=MINUTE)
    inverted = performance(-positions, closes, cost_bps=cost, bar_seconds=MINUTE)
    assert inverted.gross_return == pytest.approx(-straight.gross_return, abs=1e-12)
    # The same number of position changes: the same costs, so the same trades.
    assert inverted.trades == straight.trades
    assert inverted.actions["buy"] == straight.actions["sell"]


@settings(max_examples=200, deadline=None)
@given(market(), st.floats(0, 50), st.floats(0, 50))
def test_costs_only_ever_lower_the_net_return(
    case: tuple[np.ndarray, np.ndarray], low: float, extra: float
) -> None:
    positions, closes = case
    cheap = performance(positions, closes, cost_bps=low, bar_seconds=MINUTE)
    dear = performance(positions, closes, cost_bps=low + extra, bar_seconds=MINUTE)
    assert cheap.net_return <= cheap.gross_return + 1e-15
    assert dear.net_return <= cheap.net_return + 1e-15
    assert dear.gross_return == cheap.gross_return


@settings(max_examples=100, deadline=None)
@given(market(), st.floats(0, 50))
def test_the_bar_by_bar_book_sums_as_the_arrays_do(
    case: tuple[np.ndarray, np.ndarray], cost: float
) -> None:
    positions, closes = case
    book = PaperBook(cost)
    names = {-1: "sell", 0: "hold", 1: "buy"}
    nets, closed = [], []
    for index, close in enumerate(closes):
        outcome = book.mark(close)
        if outcome is not None:
            nets.append(outcome.net_return)
        if index < len(positions):
            trade = book.take(names[int(positions[index])], close, float(index))
            if trade is not None:
                closed.append(trade.net_return)
    gross, net = bar_returns(positions, closes, cost)
    assert nets == pytest.approx(net.tolist(), abs=1e-15)
    expected = [t.net_return for t in trades_of(positions, gross, cost) if t.closed]
    # The book closes a trade when a later decision leaves it: the last open one stays open.
    assert closed == pytest.approx(expected[: len(closed)], abs=1e-12)
    assert len(expected) - len(closed) in {0, 1}
