"""Bars from a CSV file, in the layouts people and pandas write.

A header row names the columns, case-insensitively: ``timestamp`` (or ``date``, ``datetime``,
``time``, or an unnamed first column, as pandas writes an index), ``open``, ``high``, ``low``,
``close``, ``volume``; other columns are ignored. Times are ISO-8601 times or dates; a time
without a zone is UTC. A bad file or row stops the read with one line naming the line.

Duplicate timestamps keep the last row (a corrected bar); a timestamp earlier than the one
before it is an error. Gaps (more than twice the smallest spacing) are counted and reported.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from app.trading.bars import Bar, BarSeries, MarketDataError

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
TIME_COLUMNS = ("timestamp", "date", "datetime", "time")
_GAP_FACTOR = 2.0


@dataclass
class CsvReport:
    """What a read found worth saying: duplicates dropped and gaps seen."""

    path: Path
    rows: int = 0
    duplicates: int = 0
    first_duplicate_line: int | None = None
    gaps: int = 0
    largest_gap_seconds: float = 0.0
    largest_gap_line: int | None = None
    smallest_spacing: float = 0.0

    def notes(self) -> list[str]:
        said = []
        if self.duplicates:
            said.append(
                f"{self.duplicates} duplicate timestamp(s) (first at line "
                f"{self.first_duplicate_line}): kept the last row of each"
            )
        if self.gaps:
            said.append(
                f"{self.gaps} gap(s) in the bars (largest {self.largest_gap_seconds:g} s, "
                f"before line {self.largest_gap_line})"
            )
        return said


def parse_time(text: str) -> float:
    """ISO-8601 time or date as Unix seconds; no zone means UTC."""
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _columns(header: list[str], path: Path) -> tuple[int, dict[str, int]]:
    names = [name.strip().lower() for name in header]
    where = {name: index for index, name in enumerate(names) if name}
    missing = [name for name in PRICE_COLUMNS if name not in where]
    if missing:
        raise MarketDataError(
            f"{path} line 1: no column {', '.join(missing)} in the header "
            f"(need timestamp, open, high, low, close, volume)"
        )
    for name in TIME_COLUMNS:
        if name in where:
            return where[name], where
    if names and names[0] in {"", "unnamed: 0", "index"}:
        return 0, where  # pandas' index column, written with no name
    raise MarketDataError(
        f"{path} line 1: no time column (timestamp, date, datetime, time, or an unnamed first "
        "column)"
    )


def _bar(row: list[str], time_at: int, where: dict[str, int], path: Path, line: int) -> Bar:
    width = max(time_at, *(where[name] for name in PRICE_COLUMNS)) + 1
    if len(row) < width:
        raise MarketDataError(f"{path} line {line}: {len(row)} fields, expected {width}")
    try:
        time = parse_time(row[time_at])
    except ValueError:
        raise MarketDataError(
            f"{path} line {line}: timestamp {row[time_at]!r} is not an ISO-8601 time or date"
        ) from None
    values = []
    for name in PRICE_COLUMNS:
        text = row[where[name]]
        try:
            value = float(text)
        except ValueError:
            raise MarketDataError(f"{path} line {line}: {name} {text!r} is not a number") from None
        if not math.isfinite(value):
            raise MarketDataError(f"{path} line {line}: {name} is {text!r}, not a finite number")
        values.append(value)
    opened, high, low, close, volume = values
    if min(opened, high, low, close) <= 0:
        raise MarketDataError(f"{path} line {line}: prices must be positive")
    if high < max(opened, close, low) or low > min(opened, close):
        raise MarketDataError(
            f"{path} line {line}: high {high:g} and low {low:g} do not contain open {opened:g} "
            f"and close {close:g}"
        )
    if volume < 0:
        raise MarketDataError(f"{path} line {line}: volume {volume:g} is negative")
    return Bar(time, opened, high, low, close, volume)


def read_csv_bars(path: Path, report: CsvReport | None = None) -> Iterator[Bar]:
    """The file's bars in order, streamed; duplicates resolved, gaps counted in `report`."""
    report = report if report is not None else CsvReport(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise MarketDataError(f"{path}: cannot be read: {error.strerror}") from None
    with handle:
        yield from _in_order(_parsed(handle, path), report, path)


def _parsed(handle: TextIO, path: Path) -> Iterator[tuple[int, Bar, str]]:
    """(line, bar, timestamp text) for each data row."""
    rows = csv.reader(handle)
    line = 1
    try:
        header = next(rows, None)
        if header is None:
            raise MarketDataError(f"{path} line 1: the file is empty (no header row)")
        time_at, where = _columns(header, path)
        for row in rows:
            line = rows.line_num
            if any(cell.strip() for cell in row):
                yield line, _bar(row, time_at, where, path, line), row[time_at].strip()
    except (csv.Error, UnicodeDecodeError) as error:
        raise MarketDataError(f"{path} line {line + 1}: {error}") from None


def _in_order(rows: Iterator[tuple[int, Bar, str]], report: CsvReport, path: Path) -> Iterator[Bar]:
    pending: Bar | None = None
    pending_line = 0
    for line, bar, stamp in rows:
        if pending is not None:
            if bar.time == pending.time:
                report.duplicates += 1
                report.first_duplicate_line = report.first_duplicate_line or line
                pending, pending_line = bar, line
                continue
            if bar.time < pending.time:
                raise MarketDataError(
                    f"{path} line {line}: timestamp {stamp} is earlier than the one before it "
                    f"(line {pending_line})"
                )
            _note_spacing(report, bar.time - pending.time, line)
            report.rows += 1
            yield pending
        pending, pending_line = bar, line
    if pending is not None:
        report.rows += 1
        yield pending


def _note_spacing(report: CsvReport, spacing: float, line: int) -> None:
    """A gap is a spacing over twice the smallest seen so far (the bars' own period)."""
    if report.smallest_spacing == 0.0 or spacing < report.smallest_spacing:
        report.smallest_spacing = spacing
    if spacing > _GAP_FACTOR * report.smallest_spacing:
        report.gaps += 1
        if spacing > report.largest_gap_seconds:
            report.largest_gap_seconds = spacing
            report.largest_gap_line = line


def load_csv_bars(path: Path) -> tuple[BarSeries, CsvReport]:
    """The whole file as columns (for replay), with what the read found."""
    report = CsvReport(path)
    series = BarSeries.of(read_csv_bars(path, report))
    if len(series) == 0:
        raise MarketDataError(f"{path}: no bars after the header")
    return series, report
