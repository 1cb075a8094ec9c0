"""What the journal says about each model version: its trading figures, and its recorded bars.

Per version, outcomes a bot reported (``source = 'reported'``) take the place of the host's
paper outcomes whenever there are any.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from app.brain.decision import ACTIONS
from app.trading.journal import DecisionJournal
from app.trading.positions import max_drawdown, sharpe


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """One version's record in the journal."""

    version: str
    source: str  # paper | reported | none (decisions but no outcome yet)
    decisions: int
    trades: int  # closed trades
    win_rate: float | None
    gross_return: float
    net_return: float
    max_drawdown: float
    sharpe: float
    actions: dict[str, int]
    first_bar: float | None
    last_bar: float | None

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def version_figures(journal: DecisionJournal, role: str = "champion") -> dict[str, VersionFigures]:
    """Every version's figures over the journal (blocking); empty without a journal."""
    try:
        with journal.reading() as connection:
            if connection is None:
                return {}
            return _figures(connection, role)
    except sqlite3.Error as error:
        logger.warning(f"⚠️ [JOURNAL] Cannot read {journal.path.name}: {error}")
        return {}


def _figures(connection: sqlite3.Connection, role: str) -> dict[str, VersionFigures]:
    actions: dict[str, dict[str, int]] = {}
    spans: dict[str, tuple[float, float]] = {}
    for version, action, count, first, last in connection.execute(
        "SELECT version, action, COUNT(*), MIN(bar_time), MAX(bar_time) FROM decisions "
        "WHERE role = ? GROUP BY version, action",
        (role,),
    ):
        counts = actions.setdefault(version, dict.fromkeys(ACTIONS, 0))
        counts[action] = count
        low, high = spans.get(version, (first, last))
        spans[version] = (min(low, first), max(high, last))
    sources = {
        version: {
            source
            for (source,) in connection.execute(
                "SELECT DISTINCT source FROM outcomes WHERE version = ? AND role = ?",
                (version, role),
            )
        }
        for version in {
            v
            for (v,) in connection.execute(
                "SELECT DISTINCT version FROM outcomes WHERE role = ?", (role,)
            )
        }
        | set(actions)
    }
    figures = {}
    for version, seen in sorted(sources.items()):
        source = "reported" if "reported" in seen else ("paper" if "paper" in seen else "none")
        figures[version] = _one(
            connection,
            version,
            role=role,
            source=source,
            actions=actions.get(version, {}),
            span=spans.get(version),
        )
    return figures


def _one(
    connection: sqlite3.Connection,
    version: str,
    *,
    role: str,
    source: str,
    actions: dict[str, int],
    span: tuple[float, float] | None,
) -> VersionFigures:
    rows = connection.execute(
        "SELECT bar_time, COALESCE(gross_return, net_return), net_return FROM outcomes "
        "WHERE version = ? AND role = ? AND source = ? AND kind = 'bar' ORDER BY bar_time, id",
        (version, role, source),
    ).fetchall()
    trades = [
        net
        for (net,) in connection.execute(
            "SELECT net_return FROM outcomes WHERE version = ? AND role = ? AND source = ? "
            "AND kind = 'trade' ORDER BY bar_time, id",
            (version, role, source),
        )
    ]
    series = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    times, gross, net = series[:, 0], series[:, 1], series[:, 2]
    if len(net) == 0 and trades:
        # Only whole trades were reported: they are the return series.
        net = gross = np.asarray(trades, dtype=np.float64)
        times = np.asarray(
            [
                t
                for (t,) in connection.execute(
                    "SELECT bar_time FROM outcomes WHERE version = ? AND role = ? AND source = ? "
                    "AND kind = 'trade' ORDER BY bar_time, id",
                    (version, role, source),
                )
            ],
            dtype=np.float64,
        )
    spacing = float(np.median(np.diff(times))) if len(times) > 1 else 60.0
    wins = sum(1 for value in trades if value > 0)
    return VersionFigures(
        version=version,
        source=source,
        decisions=sum(actions.values()),
        trades=len(trades),
        win_rate=wins / len(trades) if trades else None,
        gross_return=float(np.sum(gross)),
        net_return=float(np.sum(net)),
        max_drawdown=max_drawdown(net),
        sharpe=sharpe(net, spacing or 60.0),
        actions={action: actions.get(action, 0) for action in ACTIONS},
        first_bar=None if span is None else span[0],
        last_bar=None if span is None else span[1],
    )


@dataclass(frozen=True, slots=True)
class RecordedBars:
    """The champion's journaled decisions as replay input: one row per bar, oldest first."""

    times: np.ndarray
    closes: np.ndarray
    features: np.ndarray


def recorded_bars(journal: DecisionJournal, width: int) -> RecordedBars:
    """Journaled feature rows of `width` with their bar's close; the last row of each bar."""
    times: list[float] = []
    closes: list[float] = []
    blobs: list[bytes] = []
    with journal.reading() as connection:
        if connection is None:
            return RecordedBars(np.empty(0), np.empty(0), np.empty((0, width), np.float32))
        for bar_time, close, blob in connection.execute(
            "SELECT bar_time, close, features FROM decisions WHERE role = 'champion' "
            "AND close IS NOT NULL AND length(features) = ? ORDER BY bar_time, id",
            (4 * width,),
        ):
            if times and times[-1] == bar_time:  # the same bar decided twice (a restart)
                closes[-1], blobs[-1] = close, blob
                continue
            times.append(bar_time)
            closes.append(close)
            blobs.append(blob)
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), width)
    return RecordedBars(np.asarray(times), np.asarray(closes), matrix.astype(np.float32))
