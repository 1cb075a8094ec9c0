"""Bars: the seeded synthetic market, and CSV files in the layouts people and pandas write."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.trading.bars import BarSeries, MarketDataError
from app.trading.csvbars import CsvReport, load_csv_bars, read_csv_bars
from app.trading.synthetic import synthetic_bars, synthetic_bars_stream

HEADER = "timestamp,open,high,low,close,volume\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def frame(series: BarSeries) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open": series.open,
            "high": series.high,
            "low": series.low,
            "close": series.close,
            "volume": series.volume,
        },
        index=pd.to_datetime(series.time, unit="s", utc=True),
    )


# -- synthetic --------------------------------------------------------------------------------


def test_the_synthetic_market_is_deterministic_and_seeded() -> None:
    first = synthetic_bars(5000, seed=3)
    again = synthetic_bars(5000, seed=3)
    other = synthetic_bars(5000, seed=4)

    assert np.array_equal(first.close, again.close)
    assert np.array_equal(first.volume, again.volume)
    assert not np.array_equal(first.close, other.close)
    # Reading bar by bar gives the same bars as reading them all at once.
    streamed = list(itertools.islice(synthetic_bars_stream(3), 5000))
    assert [bar.close for bar in streamed] == first.close.tolist()


def test_synthetic_bars_are_well_formed_minute_bars_with_clustered_volatility() -> None:
    bars = synthetic_bars(20_000, seed=7)

    assert np.all(np.diff(bars.time) == 60)
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.volume > 0)
    returns = np.diff(bars.close) / bars.close[:-1]
    # Volatility clusters: absolute returns are autocorrelated, as in real markets.
    size = np.abs(returns)
    assert np.corrcoef(size[:-1], size[1:])[0, 1] > 0.1
    # Volume rises with the size of the move.
    assert np.corrcoef(size, bars.volume[1:])[0, 1] > 0.3


# -- CSV layouts ------------------------------------------------------------------------------


def test_a_csv_written_by_pandas_with_an_unnamed_index_reads_back_exactly(
    tmp_path: Path,
) -> None:
    bars = synthetic_bars(500, seed=1)
    path = tmp_path / "bars.csv"
    frame(bars).to_csv(path)  # header ",open,high,...": the index column has no name
    assert path.read_text(encoding="utf-8").startswith(",open,high,low,close,volume\n")

    read, report = load_csv_bars(path)

    assert np.array_equal(read.time, bars.time)
    assert np.allclose(read.close, bars.close, rtol=1e-15)
    assert report.notes() == []


def test_a_pandas_csv_with_a_numbered_index_uses_the_named_time_column(tmp_path: Path) -> None:
    bars = synthetic_bars(100, seed=1)
    table = frame(bars).reset_index(names="Date")  # index 0, 1, 2 ... written unnamed
    path = tmp_path / "bars.csv"
    table.to_csv(path)

    read, _ = load_csv_bars(path)

    assert np.array_equal(read.time, bars.time)


@pytest.mark.parametrize(
    ("header", "stamp"),
    [
        ("timestamp,open,high,low,close,volume", "2024-03-01T09:30:00Z"),
        ("Date,Open,High,Low,Close,Volume", "2024-03-01"),
        ("DATETIME,OPEN,HIGH,LOW,CLOSE,VOLUME", "2024-03-01 09:30:00+00:00"),
        ("time,volume,close,low,high,open,extra", "2024-03-01T10:30:00+01:00"),
    ],
)
def test_common_layouts_are_read(tmp_path: Path, header: str, stamp: str) -> None:
    names = header.lower().split(",")
    values = {"open": "10", "high": "11", "low": "9", "close": "10.5", "volume": "100"}
    row = ",".join(
        values.get(name, stamp if name in {"timestamp", "date", "datetime", "time"} else "x")
        for name in names
    )
    path = write(tmp_path / "bars.csv", f"{header}\n{row}\n")

    [bar] = list(read_csv_bars(path))

    assert bar.close == 10.5
    assert bar.high == 11
    expected = pd.Timestamp(stamp)
    expected = expected.tz_localize("UTC") if expected.tzinfo is None else expected
    assert bar.time == expected.timestamp()


# -- bad files: one line naming the line ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,abc,10\n",
            "line 3: close 'abc' is not a number",
        ),
        ("2024-01-01,1,2,0.5,1.5,10\nyesterday,1,2,0.5,1.5,10\n", "line 3: timestamp 'yesterday'"),
        ("2024-01-01,1,0.9,0.5,1.5,10\n", "line 2: high 0.9 and low 0.5 do not contain"),
        ("2024-01-01,1,2,0.5,1.5,-1\n", "line 2: volume -1 is negative"),
        ("2024-01-01,1,2,0.5,nan,10\n", "line 2: close is 'nan', not a finite number"),
        ("2024-01-01,1,2,0.5\n", "line 2: 4 fields, expected 6"),
        (
            "2024-01-02,1,2,0.5,1.5,10\n2024-01-01,1,2,0.5,1.5,10\n",
            "line 3: timestamp 2024-01-01 is earlier",
        ),
    ],
)
def test_a_bad_row_is_one_line_naming_its_line(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path / "bars.csv", HEADER + body)

    with pytest.raises(MarketDataError) as raised:
        load_csv_bars(path)

    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"{path} ")
    assert message in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "line 1: the file is empty"),
        ("date,open,high,low,close\n", "line 1: no column volume"),
        ("when,open,high,low,close,volume\n", "line 1: no time column"),
        (HEADER, "no bars after the header"),
    ],
)
def test_a_bad_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "bars.csv", content)

    with pytest.raises(MarketDataError, match=message):
        load_csv_bars(path)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match="cannot be read"):
        load_csv_bars(tmp_path / "nope.csv")


def test_duplicate_timestamps_keep_the_last_row_and_gaps_are_counted(tmp_path: Path) -> None:
    rows = [
        "2024-01-01T00:00:00,1,2,0.5,1.0,10",
        "2024-01-01T00:01:00,1,2,0.5,1.1,10",
        "2024-01-01T00:01:00,1,2,0.5,1.2,10",  # a corrected bar
        "2024-01-01T00:02:00,1,2,0.5,1.3,10",
        "",  # blank lines are skipped
        "2024-01-01T01:00:00,1,2,0.5,1.4,10",  # 58 minutes missing
    ]
    path = write(tmp_path / "bars.csv", HEADER + "\n".join(rows) + "\n")
    report = CsvReport(path)

    closes = [bar.close for bar in read_csv_bars(path, report)]

    assert closes == [1.0, 1.2, 1.3, 1.4]
    assert (report.duplicates, report.first_duplicate_line) == (1, 4)
    assert (report.gaps, report.largest_gap_seconds, report.largest_gap_line) == (1, 3480, 7)
    assert report.notes() == [
        "1 duplicate timestamp(s) (first at line 4): kept the last row of each",
        "1 gap(s) in the bars (largest 3480 s, before line 7)",
    ]
