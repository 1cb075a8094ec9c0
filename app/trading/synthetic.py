"""A seeded synthetic market: minute bars with regimes, volatility clustering and volume.

Deterministic: the same seed gives the same bars, on every machine, however many are read at a
time (bars are drawn in fixed blocks of `_BLOCK`). The process, per bar:

- a hidden regime (trending up, trending down, ranging) that persists for about 300 bars;
- a one-bar return ``drift[regime] + phi[regime] * previous return + sigma * noise``: trends
  drift and have momentum, ranges mean-revert, so the indicators carry real information;
- ``sigma`` clusters (GARCH(1,1)) and follows a U-shaped intraday profile, as does volume;
- highs and lows extend past the open and close by a fraction of ``sigma``; volume rises with
  the size of the move.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from app.trading.bars import Bar, BarSeries

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)
_BLOCK = 4096
_REGIME_STAY = 0.9967  # mean regime length about 300 bars
_DRIFT = (0.1, -0.1, 0.0)  # in units of the bar's sigma: up, down, range
_MOMENTUM = (0.08, 0.08, -0.08)
_BASE_SIGMA = 0.0008  # about 8 bps a minute
_GARCH = (0.05, 0.10, 0.85)  # omega share, alpha, beta
_BASE_VOLUME = 1000.0


def _intraday(seconds_of_day: float) -> float:
    """A U shape over the UTC day: busiest at the day's start and end, calmest at midday."""
    phase = 2 * math.pi * seconds_of_day / 86400
    return 1.0 + 0.4 * math.cos(phase)


def synthetic_bars_stream(
    seed: int = 7,
    *,
    bar_seconds: float = 60.0,
    start: datetime = DEFAULT_START,
    start_price: float = 100.0,
) -> Iterator[Bar]:
    """An endless, deterministic series of bars."""
    rng = np.random.default_rng(seed)
    t = start.timestamp()
    close = start_price
    regime = 2
    previous = 0.0
    variance = _BASE_SIGMA**2
    omega, alpha, beta = _GARCH
    while True:
        switches = rng.random(_BLOCK).tolist()
        choices = rng.integers(0, 3, _BLOCK).tolist()
        noise = rng.standard_normal((_BLOCK, 4)).tolist()
        for switch, choice, (eps, up, down, vol) in zip(switches, choices, noise, strict=True):
            if switch > _REGIME_STAY:
                regime = choice
            shape = _intraday(t % 86400)
            sigma = math.sqrt(variance) * shape
            ret = _DRIFT[regime] * sigma + _MOMENTUM[regime] * previous + sigma * eps
            ret = max(ret, -0.2)
            opened = close
            close = opened * (1.0 + ret)
            high = max(opened, close) * (1.0 + abs(up) * 0.5 * sigma)
            low = min(opened, close) * (1.0 - abs(down) * 0.5 * sigma)
            volume = _BASE_VOLUME * shape * (1.0 + abs(ret) / _BASE_SIGMA) * math.exp(0.3 * vol)
            yield Bar(t, opened, high, low, close, round(volume, 2))
            # Variance reverts to the base level; big moves raise it for a while.
            variance = omega * _BASE_SIGMA**2 + alpha * (ret / shape) ** 2 + beta * variance
            previous = ret
            t += bar_seconds


def synthetic_bars(count: int, seed: int = 7, *, bar_seconds: float = 60.0) -> BarSeries:
    """The first `count` bars of the seeded stream, as columns."""
    stream = synthetic_bars_stream(seed, bar_seconds=bar_seconds)
    return BarSeries.of(next(stream) for _ in range(count))
