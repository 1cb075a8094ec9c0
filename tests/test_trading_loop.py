"""The host's trading loop on a real brain: bars in, decisions, paper positions, the journal."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.brain.brain import TradingBrain
from app.brain.models import Candidate
from app.install.installer import ModelInstaller
from app.services.monitoring import ProductionMonitoringService
from app.settings import Settings
from app.trading.bars import BarSeries
from app.trading.csvbars import CsvReport, read_csv_bars
from app.trading.features import WARMUP_BARS
from app.trading.journal import DecisionJournal
from app.trading.loop import TradingLoop
from app.trading.market import BarFeed
from app.trading.replay import ReplayInput, replay
from app.trading.replaying import scorer_of
from app.trading.synthetic import synthetic_bars
from tests.metrics import parse_metrics, value

SLOT = "unified_brain"


async def never_stop(_seconds: float) -> bool:
    return False


def feed_of(series: BarSeries, name: str = "test bars") -> BarFeed:
    return BarFeed(name, iter(list(series.bars())))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[DecisionJournal]:
    opened = DecisionJournal(tmp_path / "journal.sqlite3", flush_seconds=0.02)
    yield opened
    opened.close()


def query(journal: DecisionJournal, sql: str) -> list[tuple]:
    journal.flush()
    with sqlite3.connect(journal.path) as connection:
        return connection.execute(sql).fetchall()


async def test_the_loop_trades_as_replay_computes_over_the_same_bars(
    brain: TradingBrain, journal: DecisionJournal
) -> None:
    bars = synthetic_bars(1500, seed=21)
    loop = TradingLoop(brain, feed_of(bars), cost_bps=1.0, journal=journal)

    await loop.run(never_stop)

    assert loop.bars == 1500
    assert loop.decisions == 1500 - (WARMUP_BARS - 1)
    snapshot = brain.snapshot
    report = replay(
        ReplayInput.from_bars(bars),
        (snapshot.versions[SLOT], scorer_of(snapshot.decision)),
        None,
        threshold=brain.settings.confidence_threshold,
        cost_bps=1.0,
    )
    # One decision at a time on the host, one batch in replay: the same trading.
    assert loop.net_return == pytest.approx(report.incumbent.performance.net_return, abs=1e-9)
    journaled = query(journal, "SELECT action FROM decisions ORDER BY bar_time")
    positions = [{"sell": -1, "hold": 0, "buy": 1}[a] for (a,) in journaled]
    assert positions == report.incumbent.positions.tolist()
    [(count, total)] = query(
        journal, "SELECT COUNT(*), SUM(net_return) FROM outcomes WHERE kind = 'bar'"
    )
    assert count == loop.decisions - 1  # the last decision waits for the next bar
    assert total == pytest.approx(loop.net_return, abs=1e-12)
    trades = query(journal, "SELECT COUNT(*) FROM outcomes WHERE kind = 'trade'")[0][0]
    assert trades > 0
    assert len(set(positions)) == 3  # the embedded model buys, sells and holds


async def test_outcomes_are_attributed_to_the_version_that_decided_across_a_swap(
    brain: TradingBrain, models: ModelInstaller, journal: DecisionJournal, model_file: object
) -> None:
    bars = list(synthetic_bars(400, seed=5).bars())
    loop = TradingLoop(brain, BarFeed("bars", iter(())), cost_bps=1.0, journal=journal)
    for bar in bars[:200]:
        loop.step(bar)
    swapped = await models.swap_in([Candidate(SLOT, model_file("v2.onnx", seed=3, version="v2"))])
    assert swapped.ok
    for bar in bars[200:]:
        loop.step(bar)

    decided = dict(query(journal, "SELECT version, COUNT(*) FROM decisions GROUP BY version"))
    assert decided == {"embedded-1": 200 - (WARMUP_BARS - 1), "v2": 200}
    # Bar 199's decision was embedded-1's; its outcome, known on bar 200, is still its own.
    last_old = query(
        journal, f"SELECT version FROM outcomes WHERE bar_time = {bars[199].time} AND kind = 'bar'"
    )
    assert last_old == [("embedded-1",)]
    outcomes = dict(
        query(journal, "SELECT version, COUNT(*) FROM outcomes WHERE kind = 'bar' GROUP BY version")
    )
    assert outcomes == {"embedded-1": 200 - (WARMUP_BARS - 1), "v2": 199}


async def test_a_csv_feed_ends_once_and_the_loop_returns(
    brain: TradingBrain, tmp_path: Path, logs: list[str]
) -> None:
    path = tmp_path / "bars.csv"
    series = synthetic_bars(100, seed=1)
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [
        f"{int(b.time)},{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in series.bars()
    ]
    # Unix seconds are not ISO-8601: the first row stops the feed with its line named.
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loop = TradingLoop(brain, BarFeed(str(path), read_csv_bars(path)), cost_bps=1)

    await loop.run(never_stop)

    stamp = int(series.time[0])
    expected = f"{path} line 2: timestamp '{stamp}' is not an ISO-8601 time or date"
    assert [line for line in logs if "The feed stopped" in line] == [
        f"❌ [TRADING] The feed stopped: {expected}"
    ]
    good = tmp_path / "good.csv"
    good.write_text(
        "date,open,high,low,close,volume\n"
        + "".join(
            f"{np.datetime64(int(b.time), 's')},{b.open},{b.high},{b.low},{b.close},{b.volume}\n"
            for b in series.bars()
        ),
        encoding="utf-8",
    )
    report = CsvReport(good)
    loop = TradingLoop(brain, BarFeed(str(good), read_csv_bars(good, report), report), cost_bps=1)
    await loop.run(never_stop)
    ended = [line for line in logs if "[TRADING] End of" in line]
    assert len(ended) == 1
    assert f"End of {good} after 100 bars and 40 decisions" in ended[0]


async def test_a_stop_request_ends_a_paced_feed(brain: TradingBrain) -> None:
    calls = []

    async def stop_after_three(seconds: float) -> bool:
        calls.append(seconds)
        return len(calls) >= 3

    loop = TradingLoop(
        brain, feed_of(synthetic_bars(100, seed=1)), cost_bps=1, bars_per_second=1000
    )
    await loop.run(stop_after_three)
    assert loop.bars == 3
    # Paced against deadlines 1 ms apart: bar i waits at most until start + i ms.
    assert all(0 <= seconds <= 0.001 * (i + 1) for i, seconds in enumerate(calls))


async def test_one_terminal_line_per_log_every_bars(brain: TradingBrain, logs: list[str]) -> None:
    loop = TradingLoop(brain, feed_of(synthetic_bars(160, seed=1)), cost_bps=1, log_every=25)
    await loop.run(never_stop)

    said = [line for line in logs if line.startswith("📈 [TRADING] 20")]
    assert len(said) == 4  # bars 75, 100, 125, 150: the first decision is on bar 61
    assert "position " in said[0]
    assert "net " in said[0]
    assert f"by {SLOT}=embedded-1" in said[0]


async def test_metrics_show_position_returns_and_trades_per_slot_and_version(
    settings: Settings, brain: TradingBrain
) -> None:
    monitoring = ProductionMonitoringService()
    loop = TradingLoop(brain, feed_of(synthetic_bars(800, seed=9)), cost_bps=1, observer=monitoring)
    await loop.run(never_stop)

    labels = {"slot": SLOT, "version": "embedded-1"}
    metrics = parse_metrics(monitoring.render()[0].decode())
    assert value(metrics, "trading_paper_position", **labels) == loop.position
    assert value(metrics, "trading_paper_net_return", **labels) == pytest.approx(loop.net_return)
    assert value(metrics, "trading_paper_bars_total", **labels) == loop.decisions - 1
    wins = value(metrics, "trading_paper_trades_total", **labels, result="win") or 0
    losses = value(metrics, "trading_paper_trades_total", **labels, result="loss") or 0
    assert wins + losses > 0
    assert settings.brain.decision_slot == SLOT


async def test_a_restarted_host_resumes_after_the_bars_already_journaled(
    brain: TradingBrain, journal: DecisionJournal, logs: list[str]
) -> None:
    bars = synthetic_bars(500, seed=6)
    first = TradingLoop(brain, feed_of(bars), cost_bps=1, journal=journal)
    for bar in list(bars.bars())[:300]:
        first.step(bar)
    journal.flush()
    resumed_at = journal.last_bar_time()
    assert resumed_at == bars.time[299]

    sleeps: list[float] = []

    async def counted(seconds: float) -> bool:
        sleeps.append(seconds)
        return False

    again = TradingLoop(
        brain,
        feed_of(bars),
        cost_bps=1,
        journal=journal,
        resume_after=resumed_at,
        bars_per_second=100_000,
    )
    await again.run(counted)

    assert again.skipped == 300
    assert again.decisions == 200  # the features were warm: bar 300 is decided at once
    times = [t for (t,) in query(journal, "SELECT bar_time FROM decisions ORDER BY bar_time")]
    assert times == bars.time[WARMUP_BARS - 1 :].tolist()  # no bar decided twice
    assert "📈 [TRADING] Resuming after 300 bars already in the journal" in logs
    # Skipped bars are not paced (a restart catches up at once), traded ones are.
    assert len(sleeps) == 200 + 300 // 64  # 200 paced bars; a yield per 64 skipped ones


async def test_a_locked_journal_never_fails_a_decision(
    brain: TradingBrain, tmp_path: Path, logs: list[str]
) -> None:
    path = tmp_path / "locked.sqlite3"
    journal = DecisionJournal(path, flush_seconds=0.01, busy_timeout_seconds=0.01)
    journal.record_decision(0.0, 1.0, np.zeros(16, np.float32), brain.decide([0.0] * 16))
    assert journal.flush()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        loop = TradingLoop(brain, feed_of(synthetic_bars(400, seed=2)), cost_bps=1, journal=journal)
        await loop.run(never_stop)
        assert loop.decisions == 400 - (WARMUP_BARS - 1)
        journal.flush(timeout=0.2)
        assert journal.counts.write_errors >= 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    journal.close()
    assert journal.counts.pending == 0  # written once the lock went away
    assert any("[JOURNAL] Cannot write locked.sqlite3: database is locked" in line for line in logs)
