"""The 16 market features, computed from bars incrementally: pure, O(1) work per bar.

Each feature is defined in the README ("Features"); indicators follow TA-Lib's definitions,
including its seeding (a simple average of the first window, then Wilder's or the exponential
recursion), so they agree with TA-Lib on the same bars. No feature row exists until
:data:`WARMUP_BARS` bars have been seen: the first decision is on bar index ``WARMUP_BARS - 1``.

Running sums are recomputed from their windows every :data:`_RESUM_EVERY` bars, so rounding
never accumulates over a long feed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from app.errors import ConfigurationError
from app.settings import DEFAULT_FEATURES
from app.trading.bars import Bar, BarSeries

# The names this module computes, in its row order: the settings' default feature list.
FEATURE_NAMES = DEFAULT_FEATURES
LONG = 60  # the longest window: return_1h, volatility_1h, volume_ratio_1h
WARMUP_BARS = LONG + 1  # volatility_1h needs 60 one-bar returns, so 61 bars
RSI_PERIOD = 14
ATR_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BOLLINGER_PERIOD, BOLLINGER_WIDTH = 20, 2.0
_RESUM_EVERY = 1024
_DAY = 86400.0


def feature_indices(names: Sequence[str]) -> list[int]:
    """Where each configured feature name sits in :data:`FEATURE_NAMES`."""
    unknown = [name for name in names if name not in FEATURE_NAMES]
    if unknown:
        raise ConfigurationError(
            f"brain.features: no definition for {', '.join(unknown)} "
            f"(known: {', '.join(FEATURE_NAMES)})"
        )
    return [FEATURE_NAMES.index(name) for name in names]


class _Window:
    """The last `size` values with their running sum and sum of squares."""

    __slots__ = ("size", "sum", "sum_squares", "values")

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: deque[float] = deque(maxlen=size)
        self.sum = 0.0
        self.sum_squares = 0.0

    def push(self, value: float) -> None:
        values = self.values
        if len(values) == self.size:
            leaving = values[0]
            self.sum -= leaving
            self.sum_squares -= leaving * leaving
        values.append(value)
        self.sum += value
        self.sum_squares += value * value

    def resum(self) -> None:
        self.sum = math.fsum(self.values)
        self.sum_squares = math.fsum(value * value for value in self.values)

    @property
    def full(self) -> bool:
        return len(self.values) == self.size

    def mean(self) -> float:
        return self.sum / self.size

    def std(self) -> float:
        """Population standard deviation (TA-Lib's STDDEV with one deviation)."""
        mean = self.sum / self.size
        variance = self.sum_squares / self.size - mean * mean
        return math.sqrt(variance) if variance > 0 else 0.0


class FeatureEngine:
    """Feed it bars in time order; from the warm-up on, each bar gives a feature row."""

    def __init__(self) -> None:
        self._bars = 0
        self._closes: deque[float] = deque(maxlen=LONG + 1)
        self._returns_5 = _Window(5)
        self._returns_60 = _Window(LONG)
        self._volumes_5 = _Window(5)
        self._volumes_60 = _Window(LONG)
        self._closes_20 = _Window(BOLLINGER_PERIOD)
        self._gain = 0.0
        self._loss = 0.0
        self._true_range = 0.0
        self._fast = 0.0
        self._slow = 0.0
        self._signal = 0.0
        self._macd_seed = 0.0
        self._day = -1.0
        self._day_pv = 0.0
        self._day_volume = 0.0

    @property
    def bars_seen(self) -> int:
        return self._bars

    @property
    def warm(self) -> bool:
        return self._bars >= WARMUP_BARS

    def update(self, bar: Bar) -> list[float] | None:
        """Take the next bar; its feature row in :data:`FEATURE_NAMES` order, once warm."""
        time, _, high, low, close, volume = bar
        index = self._bars
        self._bars = index + 1
        closes = self._closes
        previous = closes[-1] if index else close
        closes.append(close)
        one = close / previous - 1.0
        if index:
            self._returns_5.push(one)
            self._returns_60.push(one)
        self._volumes_5.push(volume)
        self._volumes_60.push(volume)
        self._closes_20.push(close)
        if index % _RESUM_EVERY == _RESUM_EVERY - 1:
            for window in (
                self._returns_5,
                self._returns_60,
                self._volumes_5,
                self._volumes_60,
                self._closes_20,
            ):
                window.resum()
        rsi = self._rsi(index, close - previous)
        atr = self._atr(index, high, low, previous)
        signal = self._macd(index, close)
        vwap = self._vwap(time, high, low, close, volume)
        if index < WARMUP_BARS - 1:
            return None
        volumes_5, volumes_60 = self._volumes_5, self._volumes_60
        closes_20 = self._closes_20
        middle = closes_20.mean()
        band = 2.0 * BOLLINGER_WIDTH * closes_20.std()
        bar_range = high - low
        return [
            one,
            close / closes[-6] - 1.0,
            close / closes[-16] - 1.0,
            close / closes[0] - 1.0,
            self._returns_5.std(),
            self._returns_60.std(),
            volume / volumes_5.mean() if volumes_5.sum > 0 else 1.0,
            volume / volumes_60.mean() if volumes_60.sum > 0 else 1.0,
            bar_range / close * 10000.0,
            ((close - low) - (high - close)) / bar_range if bar_range > 0 else 0.0,
            rsi,
            signal / close,
            (close - (middle - band / 2)) / band if band > 0 else 0.5,
            atr / close,
            close / vwap - 1.0,
            (time % _DAY) / _DAY,
        ]

    def _rsi(self, index: int, change: float) -> float:
        """Wilder's RSI: the first 14 changes averaged, then smoothed (TA-Lib's RSI)."""
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        if index == 0:
            return 0.0
        if index <= RSI_PERIOD:
            self._gain += gain
            self._loss += loss
            if index < RSI_PERIOD:
                return 0.0
            self._gain /= RSI_PERIOD
            self._loss /= RSI_PERIOD
        else:
            self._gain = (self._gain * (RSI_PERIOD - 1) + gain) / RSI_PERIOD
            self._loss = (self._loss * (RSI_PERIOD - 1) + loss) / RSI_PERIOD
        total = self._gain + self._loss
        return 100.0 * self._gain / total if total > 0 else 0.0

    def _atr(self, index: int, high: float, low: float, previous: float) -> float:
        """Wilder's average true range over 14 bars (TA-Lib's ATR)."""
        if index == 0:
            return 0.0
        true_range = max(high - low, abs(high - previous), abs(low - previous))
        if index <= ATR_PERIOD:
            self._true_range += true_range
            if index == ATR_PERIOD:
                self._true_range /= ATR_PERIOD
            return self._true_range
        self._true_range = (self._true_range * (ATR_PERIOD - 1) + true_range) / ATR_PERIOD
        return self._true_range

    def _macd(self, index: int, close: float) -> float:
        """MACD(12, 26, 9)'s signal line, seeded as TA-Lib seeds it.

        TA-Lib starts both averages on the bar where the slow one has its full window: the
        slow from the mean of the first 26 closes, the fast from the mean of the 12 closes
        ending there; the signal from the mean of the first 9 MACD values.
        """
        first = MACD_SLOW - 1
        if index < first:
            return 0.0
        if index == first:
            closes = list(self._closes)
            self._slow = math.fsum(closes[-MACD_SLOW:]) / MACD_SLOW
            self._fast = math.fsum(closes[-MACD_FAST:]) / MACD_FAST
        else:
            self._fast += (close - self._fast) * (2.0 / (MACD_FAST + 1))
            self._slow += (close - self._slow) * (2.0 / (MACD_SLOW + 1))
        macd = self._fast - self._slow
        seeded = first + MACD_SIGNAL - 1
        if index < seeded:
            self._macd_seed += macd
            return 0.0
        if index == seeded:
            self._signal = (self._macd_seed + macd) / MACD_SIGNAL
        else:
            self._signal += (macd - self._signal) * (2.0 / (MACD_SIGNAL + 1))
        return self._signal

    def _vwap(self, time: float, high: float, low: float, close: float, volume: float) -> float:
        """The volume-weighted typical price since the start of the bar's UTC day."""
        day = time // _DAY
        if day != self._day:
            self._day = day
            self._day_pv = 0.0
            self._day_volume = 0.0
        self._day_pv += (high + low + close) / 3.0 * volume
        self._day_volume += volume
        return self._day_pv / self._day_volume if self._day_volume > 0 else close


def feature_matrix(bars: BarSeries | Iterable[Bar]) -> tuple[np.ndarray, int]:
    """Every feature row of `bars` as float32 [rows, 16], and the bar index of the first row."""
    engine = FeatureEngine()
    source = bars.bars() if isinstance(bars, BarSeries) else bars
    update = engine.update
    rows = [row for row in map(update, source) if row is not None]
    matrix = np.asarray(rows, dtype=np.float32).reshape(-1, len(FEATURE_NAMES))
    return matrix, WARMUP_BARS - 1
