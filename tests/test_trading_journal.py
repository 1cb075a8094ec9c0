"""The decision journal on real SQLite files: what it records, what it keeps, how it fails."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest

from app.brain.decision import Decision
from app.trading.figures import recorded_bars, version_figures
from app.trading.journal import DecisionJournal, connect

SLOT = "unified_brain"


def decision(action: str = "buy", version: str = "v1") -> Decision:
    probabilities = {"sell": (0.8, 0.1, 0.1), "hold": (0.1, 0.8, 0.1), "buy": (0.1, 0.1, 0.8)}
    return Decision(
        action,  # type: ignore[arg-type]
        0.8,
        probabilities[action],
        MappingProxyType({SLOT: version, "risk": "r1"}),
    )


def row(value: float) -> np.ndarray:
    return np.full(16, value, dtype=np.float32)


@pytest.fixture
def journal(tmp_path: Path) -> DecisionJournal:
    opened = DecisionJournal(tmp_path / ".sync" / "journal.sqlite3", flush_seconds=0.02)
    yield opened
    opened.close()


def rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def test_decisions_and_outcomes_are_journaled_in_wal_mode(journal: DecisionJournal) -> None:
    journal.record_decision(1_700_000_000.0, 101.5, row(0.25), decision("buy"))
    journal.record_outcome(1_700_000_000.0, "v1", net_return=0.001, gross_return=0.0011, position=1)
    assert journal.flush()

    [recorded] = rows(
        journal.path,
        "SELECT bar_time, slot, version, versions, role, action, confidence, p_sell, p_hold, "
        "p_buy, close, features FROM decisions",
    )
    assert recorded[:3] == (1_700_000_000.0, SLOT, "v1")
    assert json.loads(recorded[3]) == {SLOT: "v1", "risk": "r1"}
    assert recorded[4:7] == ("champion", "buy", 0.8)
    assert recorded[7:11] == (0.1, 0.1, 0.8, 101.5)
    assert np.frombuffer(recorded[11], "<f4").tolist() == [0.25] * 16
    assert rows(
        journal.path, "SELECT version, source, kind, position, net_return FROM outcomes"
    ) == [("v1", "paper", "bar", 1, 0.001)]
    assert rows(journal.path, "PRAGMA journal_mode") == [("wal",)]
    assert journal.counts.written == 2
    assert journal.path.parent.name == ".sync"


def test_recent_features_are_the_newest_rows_oldest_first(journal: DecisionJournal) -> None:
    assert journal.recent_features() is None  # no journal yet
    for index in range(30):
        journal.record_decision(60.0 * index, 100.0, row(index), decision())
    journal.flush()

    recent = journal.recent_features(limit=10, width=16)

    assert recent is not None
    assert recent.shape == (10, 16)
    assert recent[:, 0].tolist() == list(range(20, 30))
    assert journal.recent_features(width=15) is None  # recorded under another feature list


def test_retention_keeps_at_most_max_rows(tmp_path: Path) -> None:
    journal = DecisionJournal(tmp_path / "j.sqlite3", max_rows=50, flush_seconds=0.01)
    for index in range(400):
        journal.record_decision(60.0 * index, 100.0, row(index), decision())
        journal.record_outcome(60.0 * index, "v1", net_return=0.0)
    journal.close()

    kept = rows(journal.path, "SELECT MIN(bar_time), COUNT(*) FROM decisions")
    assert kept == [(60.0 * 350, 50)]
    assert rows(journal.path, "SELECT COUNT(*) FROM outcomes") == [(50,)]


def test_retention_drops_rows_older_than_retention_days_in_market_time(tmp_path: Path) -> None:
    journal = DecisionJournal(tmp_path / "j.sqlite3", retention_days=1, flush_seconds=0.01)
    day = 86400.0
    for bar_time in (0.0, 0.5 * day, 1.4 * day, 1.6 * day, 2.5 * day):
        journal.record_decision(bar_time, 100.0, row(0), decision())
    journal.close()

    assert rows(journal.path, "SELECT bar_time FROM decisions ORDER BY bar_time") == [
        (1.6 * day,),  # one day or less behind the newest bar
        (2.5 * day,),
    ]


def test_a_locked_database_is_a_warning_and_a_counter_and_the_rows_wait(
    tmp_path: Path, logs: list[str]
) -> None:
    path = tmp_path / "j.sqlite3"
    journal = DecisionJournal(path, flush_seconds=0.01, busy_timeout_seconds=0.05)
    journal.record_decision(0.0, 100.0, row(0), decision())
    assert journal.flush()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        for index in range(1, 101):
            journal.record_decision(60.0 * index, 100.0, row(index), decision())
        assert not journal.flush(timeout=0.5)  # nothing can be written while it is held
        assert journal.counts.write_errors >= 1
        assert journal.counts.pending == 100
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert journal.flush()
    journal.close()

    assert rows(path, "SELECT COUNT(*) FROM decisions") == [(101,)]
    assert journal.counts.dropped == 0
    warnings = [line for line in logs if "[JOURNAL] Cannot write" in line]
    assert len(warnings) == 1  # said once, not once per retry
    assert "database is locked" in warnings[0]
    assert any("[JOURNAL] Writes recovered" in line for line in logs)


def test_a_full_disk_drops_rows_beyond_the_backlog_and_counts_them(
    tmp_path: Path, logs: list[str]
) -> None:
    def small_disk(path: Path, busy: float) -> sqlite3.Connection:
        connection = connect(path, busy)
        connection.execute("PRAGMA max_page_count = 8")  # SQLite's own "disk is full"
        return connection

    journal = DecisionJournal(
        tmp_path / "j.sqlite3", flush_seconds=0.01, max_pending=200, connector=small_disk
    )
    big = np.zeros(4000, dtype=np.float32)  # 16 KB a row: the 8 pages fill at once
    for index in range(500):
        journal.record_decision(float(index), 100.0, big, decision())  # never raises
    journal.flush(timeout=1.0)
    journal.close()

    counts = journal.counts
    assert counts.write_errors >= 1
    assert counts.dropped >= 300
    assert counts.written + counts.dropped + counts.pending == 500
    assert any("full" in line for line in logs if "[JOURNAL] Cannot write" in line)


def test_recording_never_waits_for_the_database(tmp_path: Path) -> None:
    # The writer is stuck behind another process's lock for up to 10 s per try; recording
    # still returns at once, from any number of threads.
    path = tmp_path / "j.sqlite3"
    journal = DecisionJournal(path, flush_seconds=0.01, busy_timeout_seconds=10)
    journal.record_decision(0.0, 1.0, row(0), decision())
    journal.flush()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    done = threading.Event()

    def record() -> None:
        for index in range(1000):
            journal.record_decision(float(index), 1.0, row(index), decision())
        done.set()

    threading.Thread(target=record).start()
    assert done.wait(timeout=5)  # long before the writer's 10 s lock wait is over
    other.execute("ROLLBACK")
    other.close()
    journal.close()
    assert rows(path, "SELECT COUNT(*) FROM decisions") == [(1001,)]


def test_figures_per_version_from_paper_outcomes(journal: DecisionJournal) -> None:
    for index, action in enumerate(["buy", "buy", "hold", "sell"]):
        journal.record_decision(60.0 * index, 100.0, row(index), decision(action, "v1"))
    for index, net in enumerate([0.01, -0.002, 0.0, 0.003]):
        journal.record_outcome(60.0 * index, "v1", net_return=net, gross_return=net + 0.0001)
    journal.record_outcome(120.0, "v1", net_return=0.008, kind="trade", position=1)
    journal.record_decision(300.0, 100.0, row(5), decision("buy", "v2"))
    journal.flush()

    figures = version_figures(journal)

    v1 = figures["v1"]
    assert (v1.source, v1.decisions, v1.trades, v1.win_rate) == ("paper", 4, 1, 1.0)
    assert v1.net_return == pytest.approx(0.011)
    assert v1.gross_return == pytest.approx(0.0114)
    assert v1.max_drawdown == pytest.approx(0.002)
    assert v1.actions == {"sell": 1, "hold": 1, "buy": 2}
    assert v1.sharpe > 0
    assert figures["v2"].source == "none"
    assert figures["v2"].decisions == 1


def test_recorded_bars_are_one_row_per_bar_in_market_time(journal: DecisionJournal) -> None:
    journal.record_decision(120.0, 102.0, row(2), decision())
    journal.record_decision(60.0, 101.0, row(1), decision())
    journal.record_decision(60.0, 101.5, row(1.5), decision())  # the same bar after a restart
    journal.record_decision(180.0, 103.0, row(3), decision(), role="shadow")
    journal.flush()

    recorded = recorded_bars(journal, 16)

    assert recorded.times.tolist() == [60.0, 120.0]
    assert recorded.closes.tolist() == [101.5, 102.0]
    assert recorded.features[:, 0].tolist() == [1.5, 2.0]


def test_an_unwritable_row_is_dropped_and_counted_and_the_writer_goes_on(
    journal: DecisionJournal, logs: list[str]
) -> None:
    journal.record_decision(0.0, 1.0, "not a feature row", decision())  # type: ignore[arg-type]
    assert journal.flush()
    journal.record_decision(60.0, 1.0, row(1), decision())
    assert journal.flush()

    assert journal.counts.dropped == 1
    assert journal.counts.written == 1
    assert rows(journal.path, "SELECT bar_time FROM decisions") == [(60.0,)]
    assert any("[JOURNAL] Dropped 1 unwritable rows" in line for line in logs)
