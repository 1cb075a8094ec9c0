"""Where the host's bars come from: the synthetic market or a CSV file (``market`` settings)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import ConfigurationError
from app.trading.bars import Bar
from app.trading.csvbars import CsvReport, read_csv_bars
from app.trading.synthetic import synthetic_bars_stream


@dataclass
class BarFeed:
    """An iterator of bars with a name for log lines, and what a CSV read found."""

    name: str
    bars: Iterator[Bar]
    report: CsvReport | None = None


def bar_feed(source: str, *, csv_path: Path | None, seed: int, bar_seconds: float) -> BarFeed:
    """The configured feed; a CSV is read lazily, as the host consumes it."""
    if source == "synthetic":
        return BarFeed(
            f"synthetic market (seed {seed})", synthetic_bars_stream(seed, bar_seconds=bar_seconds)
        )
    if csv_path is None:
        raise ConfigurationError("market.csv_path must be set when market.source is csv")
    report = CsvReport(csv_path)
    return BarFeed(str(csv_path), read_csv_bars(csv_path, report), report)
