"""The README's embedding example runs as written, and its outcomes replace paper ones."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import app.trading
from app.trading import DecisionJournal, OutcomeReporter, version_figures
from tests.conftest import EMBEDDED_MODEL, ROOT
from tests.test_trading_journal import decision, row

MARKER = "<!-- embedding-example -->"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split(MARKER, 1)[1]
    match = re.match(r"\s*```python\n(.*?)\n```", after, re.DOTALL)
    assert match is not None, "the README's embedding example is missing"
    return match.group(1)


def test_the_readme_embedding_example_runs_and_reports_real_outcomes(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    shutil.copyfile(EMBEDDED_MODEL, tmp_path / "models" / "unified_brain.onnx")
    script = tmp_path / "bot.py"
    script.write_text(readme_example(), encoding="utf-8")

    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"embedded-1 \(reported\): 1940 decisions, net [+-]\d+\.\d\d%", done.stdout.strip()
    )
    journal = tmp_path / "models" / ".sync" / "journal.sqlite3"
    with sqlite3.connect(journal) as connection:
        sources = connection.execute(
            "SELECT source, kind, COUNT(*) FROM outcomes GROUP BY source, kind"
        ).fetchall()
    assert sources == [("reported", "bar", 1939)]


def test_reported_outcomes_take_the_place_of_paper_ones(tmp_path: Path) -> None:
    journal = DecisionJournal(tmp_path / "j.sqlite3", flush_seconds=0.01)
    reporter = OutcomeReporter(journal)
    tickets = [reporter.decided(decision("buy", "v1"), row(i), at=60.0 * i) for i in range(3)]
    for ticket in tickets:
        journal.record_outcome(ticket.bar_time, "v1", net_return=0.5)  # the paper book's
    reporter.report(tickets[0], 0.01, gross_return=0.011)
    reporter.report(tickets[1], -0.004)
    reporter.report_trade(tickets[0], 0.006, opened_at=0.0, closed_at=120.0)
    reporter.report_trade(decision("sell", "v2"), -0.002, opened_at=60.0, closed_at=180.0)

    figures = reporter.figures()
    journal.close()

    v1 = figures["v1"]
    assert v1.source == "reported"
    assert v1.net_return == pytest.approx(0.006)  # the fills, not the paper's 1.5
    assert v1.gross_return == pytest.approx(0.011 - 0.004)
    assert (v1.trades, v1.win_rate) == (1, 1.0)
    assert v1.decisions == 3
    v2 = figures["v2"]  # only a whole trade reported: it is the return series
    assert (v2.source, v2.trades, v2.win_rate, v2.net_return) == ("reported", 1, 0.0, -0.002)
    assert version_figures(journal) == figures


def test_reported_returns_must_be_finite(tmp_path: Path) -> None:
    journal = DecisionJournal(tmp_path / "j.sqlite3")
    reporter = OutcomeReporter(journal)
    ticket = reporter.decided(decision(), row(0), at=0.0)

    with pytest.raises(ValueError, match="net_return must be a finite number"):
        reporter.report(ticket, float("nan"))
    journal.close()


def test_the_embeddable_trading_surface_is_pinned() -> None:
    assert sorted(app.trading.__all__) == [
        "Bar", "BarSeries", "DecisionJournal", "DecisionTicket", "FEATURE_NAMES", "FeatureEngine",
        "JournalCounts", "MarketDataError", "OutcomeReporter", "Performance", "VersionFigures",
        "WARMUP_BARS", "feature_matrix", "load_csv_bars", "performance", "read_csv_bars",
        "synthetic_bars", "synthetic_bars_stream", "version_figures",
    ]  # fmt: skip
    for name in app.trading.__all__:
        assert getattr(app.trading, name) is not None
