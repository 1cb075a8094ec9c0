"""OHLCV bars: one bar as a tuple, many as columns of numpy arrays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from app.errors import AppError

_FLOATS = np.dtype(np.float64)


class MarketDataError(AppError):
    """A bar source cannot be read: the message names the file and line."""


class Bar(NamedTuple):
    """One bar; `time` is its timestamp in Unix seconds (UTC), market time."""

    time: float
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)


@dataclass(frozen=True, slots=True)
class BarSeries:
    """Bars as columns, oldest first (what replay and the indicators' tests read)."""

    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: Iterable[Bar]) -> BarSeries:
        rows = np.asarray(list(bars), dtype=_FLOATS).reshape(-1, 6)
        return cls(*(np.ascontiguousarray(rows[:, i]) for i in range(6)))

    def __len__(self) -> int:
        return len(self.close)

    def bars(self) -> Iterable[Bar]:
        for row in zip(
            self.time.tolist(),
            self.open.tolist(),
            self.high.tolist(),
            self.low.tolist(),
            self.close.tolist(),
            self.volume.tolist(),
            strict=True,
        ):
            yield Bar(*row)

    def bar_seconds(self) -> float:
        """The typical spacing between bars (the median), 60 when there are too few bars."""
        if len(self.time) < 2:
            return 60.0
        return float(np.median(np.diff(self.time))) or 60.0
