"""The 16 features: against TA-Lib on the same bars, and against plain formulas for the rest."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import talib

from app.errors import ConfigurationError
from app.trading.bars import Bar, BarSeries
from app.trading.features import (
    FEATURE_NAMES,
    WARMUP_BARS,
    FeatureEngine,
    feature_indices,
    feature_matrix,
)
from app.trading.synthetic import synthetic_bars

BARS = 6000


@pytest.fixture(scope="module")
def bars() -> BarSeries:
    return synthetic_bars(BARS, seed=11)


@pytest.fixture(scope="module")
def features(bars: BarSeries) -> dict[str, np.ndarray]:
    """Each feature as a column aligned with the bars (NaN before the first row)."""
    engine = FeatureEngine()
    rows = [engine.update(bar) for bar in bars.bars()]
    table = np.full((len(rows), len(FEATURE_NAMES)), np.nan)
    for index, row in enumerate(rows):
        if row is not None:
            table[index] = row
    return {name: table[:, i] for i, name in enumerate(FEATURE_NAMES)}


def agree(
    ours: np.ndarray, reference: np.ndarray, *, rtol: float = 1e-9, atol: float = 1e-12
) -> None:
    window = slice(WARMUP_BARS - 1, None)
    assert np.isfinite(ours[window]).all()
    np.testing.assert_allclose(ours[window], reference[window], rtol=rtol, atol=atol)


def one_bar_returns(bars: BarSeries) -> np.ndarray:
    return np.concatenate(([np.nan], bars.close[1:] / bars.close[:-1] - 1))


def test_no_row_before_the_warm_up(bars: BarSeries, features: dict[str, np.ndarray]) -> None:
    column = features["return_1m"]
    assert np.isnan(column[: WARMUP_BARS - 1]).all()
    assert np.isfinite(column[WARMUP_BARS - 1 :]).all()
    matrix, first = feature_matrix(bars)
    assert first == WARMUP_BARS - 1
    assert matrix.shape == (BARS - first, 16)
    assert matrix.dtype == np.float32


@pytest.mark.parametrize(
    ("name", "bars_back"),
    [("return_1m", 1), ("return_5m", 5), ("return_15m", 15), ("return_1h", 60)],
)
def test_returns_agree_with_talib_rocr(
    bars: BarSeries, features: dict[str, np.ndarray], name: str, bars_back: int
) -> None:
    agree(features[name], talib.ROCR(bars.close, bars_back) - 1)


def test_return_1m_is_the_last_bar_simple_return(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    agree(features["return_1m"], one_bar_returns(bars), rtol=0)


@pytest.mark.parametrize(("name", "window"), [("volatility_5m", 5), ("volatility_1h", 60)])
def test_volatility_agrees_with_talib_stddev_of_returns(
    bars: BarSeries, features: dict[str, np.ndarray], name: str, window: int
) -> None:
    agree(features[name], talib.STDDEV(one_bar_returns(bars), window, 1), rtol=1e-7)


@pytest.mark.parametrize(("name", "window"), [("volume_ratio_5m", 5), ("volume_ratio_1h", 60)])
def test_volume_ratios_agree_with_talib_sma(
    bars: BarSeries, features: dict[str, np.ndarray], name: str, window: int
) -> None:
    agree(features[name], bars.volume / talib.SMA(bars.volume, window))


def test_rsi_agrees_with_talib(bars: BarSeries, features: dict[str, np.ndarray]) -> None:
    agree(features["rsi_14"], talib.RSI(bars.close, 14))


def test_macd_signal_agrees_with_talib(bars: BarSeries, features: dict[str, np.ndarray]) -> None:
    _, signal, _ = talib.MACD(bars.close, 12, 26, 9)
    agree(features["macd_signal"], signal / bars.close)


def test_bollinger_position_agrees_with_talib(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    upper, _, lower = talib.BBANDS(bars.close, 20, 2, 2)
    # Both take a variance as a difference of price-sized sums: rounding near 1e-10.
    position = (bars.close - lower) / (upper - lower)
    agree(features["bollinger_position"], position, rtol=1e-6, atol=1e-8)


def test_atr_agrees_with_talib(bars: BarSeries, features: dict[str, np.ndarray]) -> None:
    agree(features["atr_14"], talib.ATR(bars.high, bars.low, bars.close, 14) / bars.close)


def test_order_imbalance_is_talib_accumulation_distribution_per_unit_volume(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    flow = np.diff(talib.AD(bars.high, bars.low, bars.close, bars.volume), prepend=np.nan)
    agree(features["order_imbalance"], flow / bars.volume, rtol=1e-6)


def test_spread_is_the_bar_range_in_basis_points(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    agree(features["spread_bps"], (bars.high - bars.low) / bars.close * 10_000)


def test_vwap_distance_uses_the_volume_weighted_typical_price_of_the_utc_day(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    typical = (bars.high + bars.low + bars.close) / 3
    days = bars.time // 86400
    vwap = np.empty(len(bars))
    for day in np.unique(days):
        today = days == day
        vwap[today] = np.cumsum(typical[today] * bars.volume[today]) / np.cumsum(bars.volume[today])
    agree(features["vwap_distance"], bars.close / vwap - 1)
    assert len(np.unique(days)) >= 4  # the day boundary was crossed


def test_time_of_day_is_the_fraction_of_the_utc_day(
    bars: BarSeries, features: dict[str, np.ndarray]
) -> None:
    moments = [datetime.fromtimestamp(t, UTC) for t in bars.time]
    expected = np.array([(m.hour * 3600 + m.minute * 60 + m.second) / 86400 for m in moments])
    agree(features["time_of_day"], expected, rtol=0)


def test_flat_bars_with_no_volume_give_neutral_finite_features() -> None:
    engine = FeatureEngine()
    rows = [engine.update(Bar(60.0 * i, 10.0, 10.0, 10.0, 10.0, 0.0)) for i in range(WARMUP_BARS)]
    row = dict(zip(FEATURE_NAMES, rows[-1] or [], strict=True))

    assert all(np.isfinite(list(row.values())))
    assert row["volume_ratio_5m"] == 1.0
    assert row["order_imbalance"] == 0.0
    assert row["bollinger_position"] == 0.5
    assert row["vwap_distance"] == 0.0


def test_the_engine_keeps_constant_state_however_long_the_feed() -> None:
    # O(1) per bar: the state is the windows, whatever the number of bars seen.
    engine = FeatureEngine()
    for bar in synthetic_bars(5000, seed=2).bars():
        engine.update(bar)
    sizes = {name: len(value) for name, value in vars(engine).items() if hasattr(value, "__len__")}
    for bar in synthetic_bars(5000, seed=3).bars():
        engine.update(bar)
    assert {
        name: len(value) for name, value in vars(engine).items() if hasattr(value, "__len__")
    } == sizes
    assert engine.bars_seen == 10_000


def test_running_sums_do_not_drift_over_a_long_feed() -> None:
    long = synthetic_bars(40_000, seed=5)
    matrix, first = feature_matrix(long)
    reference = talib.STDDEV(one_bar_returns(long), 60, 1)[first:]
    column = FEATURE_NAMES.index("volatility_1h")
    np.testing.assert_allclose(matrix[:, column], reference, rtol=1e-5)


def test_configured_feature_names_map_to_columns_and_unknown_ones_are_refused() -> None:
    assert feature_indices(["rsi_14", "return_1m"]) == [10, 0]
    with pytest.raises(ConfigurationError, match="no definition for sentiment"):
        feature_indices(["return_1m", "sentiment"])
