"""`replay`, `status --json`'s trading figures and the host on CSV bars, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app.brain.decision import Decision
from app.trading.features import WARMUP_BARS
from app.trading.journal import DecisionJournal
from app.trading.synthetic import synthetic_bars
from tests.conftest import ROOT
from tests.test_cli import LOG_LINE, Bot, RunningHost, app_environment, write_settings

SLOT = "unified_brain"
BARS = 20_000  # two weeks of minute bars: enough for the model's edge to show
FIGURES = {"decisions", "trades", "win_rate", "gross_return", "net_return", "max_drawdown",
           "sharpe", "actions"}  # fmt: skip


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=write_settings(tmp_path), models=models_dir, cwd=cwd)


@pytest.fixture
def pandas_csv(tmp_path: Path) -> Path:
    """Minute bars as pandas writes them: a DatetimeIndex in an unnamed first column."""
    bars = synthetic_bars(BARS, seed=33)
    frame = pd.DataFrame(
        {"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close,
         "Volume": bars.volume},
        index=pd.to_datetime(bars.time, unit="s", utc=True),
    )  # fmt: skip
    path = tmp_path / "bars.csv"
    frame.to_csv(path)
    return path


def replay_json(bot: Bot, *args: str | Path) -> dict[str, Any]:
    done = bot.run("replay", *args, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_replay_on_a_pandas_csv_compares_the_serving_model_and_a_candidate(
    bot: Bot, pandas_csv: Path, model_file: Callable[..., Path]
) -> None:
    candidate = model_file("new.onnx", seed=4, version="v-new")

    report = replay_json(bot, "--bars", pandas_csv, "--candidate", candidate)

    assert set(report) == {"bars", "agreement", "incumbent", "candidate"}
    assert report["bars"] == BARS
    for side, version in (("incumbent", "embedded-1"), ("candidate", "v-new")):
        figures = report[side]
        assert set(figures) >= FIGURES
        assert figures["version"] == version
        assert figures["decisions"] == BARS - (WARMUP_BARS - 1)
        assert sum(figures["actions"].values()) == figures["decisions"]
        assert figures["net_return"] <= figures["gross_return"]
    assert 0 <= report["agreement"] < 1
    # The embedded model, trained on the synthetic market (another seed), has an edge on it.
    assert report["incumbent"]["net_return"] > 0
    assert report["incumbent"]["sharpe"] > 0


def test_replaying_the_serving_model_against_itself_agrees_everywhere(
    bot: Bot, pandas_csv: Path
) -> None:
    report = replay_json(bot, "--bars", pandas_csv, "--candidate", bot.model)

    assert report["agreement"] == 1.0
    incumbent, candidate = dict(report["incumbent"]), dict(report["candidate"])
    assert incumbent.pop("version") == candidate.pop("version") == "embedded-1"
    assert incumbent == candidate


def test_replay_prints_a_side_by_side_table_and_writes_a_png(
    bot: Bot, pandas_csv: Path, model_file: Callable[..., Path], tmp_path: Path
) -> None:
    picture = tmp_path / "out" / "cmp.png"
    done = bot.run(
        "replay", "--bars", pandas_csv, "--candidate", model_file(version="v9"), "--plot", picture
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["incumbent", "candidate"]
    assert lines[1].split() == ["version", "embedded-1", "v9"]
    assert [line.split()[0] for line in lines[2:9]] == [
        "decisions", "trades", "win", "gross", "net", "max", "sharpe"
    ]  # fmt: skip
    assert f"{BARS:,} bars" in done.stdout
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 10_000


def test_replay_without_matplotlib_says_how_to_get_it(
    bot: Bot, pandas_csv: Path, tmp_path: Path
) -> None:
    # `python -m app`, in a process where importing matplotlib fails as if it were absent.
    without = (
        "import sys; sys.modules['matplotlib'] = None; from app.cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    picture = tmp_path / "x.png"
    done = subprocess.run(
        [sys.executable, "-c", without, "--settings", str(bot.settings), "replay", "--bars",
         str(pandas_csv), "--plot", str(picture)],
        cwd=bot.cwd, env={**bot.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    hint = "pip install 'app[plot]' (or pip install matplotlib)"
    assert said == [f"replay failed: replay --plot needs matplotlib: {hint}"]
    assert not picture.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,x,1\n", "line 2: close 'x'"),
        ("timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1,1\n", "too few for"),
    ],
)
def test_replay_of_a_bad_csv_is_one_line_and_exit_1(
    bot: Bot, tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")

    done = bot.run("replay", "--bars", path)

    assert done.returncode == 1
    [said] = done.said
    assert said.startswith("replay failed: ")
    assert reason in said


def test_replay_refuses_an_incompatible_candidate(
    bot: Bot, pandas_csv: Path, model_file: Callable[..., Path]
) -> None:
    done = bot.run("replay", "--bars", pandas_csv, "--candidate", model_file(n_features=15))

    assert done.returncode == 1
    [said] = done.said
    assert "replay failed: incompatible with slot 'unified_brain'" in said


def record_session(
    bot: Bot, decisions: int, versions: Mapping[str, str] | None = None
) -> DecisionJournal:
    """Journal what a host would have: a decision on each bar, with its features and close."""
    journal = DecisionJournal(bot.models / ".sync" / "journal.sqlite3")
    bars = synthetic_bars(decisions, seed=8)
    rng = np.random.default_rng(8)
    actions = ("sell", "hold", "buy")
    for index, bar in enumerate(bars.bars()):
        action = actions[int(rng.integers(0, 3))]
        decision = Decision(
            action,  # type: ignore[arg-type]
            0.7,
            (0.7, 0.2, 0.1),
            MappingProxyType(dict(versions or {SLOT: "embedded-1"})),
        )
        journal.record_decision(bar.time, bar.close, rng.standard_normal(16), decision)
        if index:
            journal.record_outcome(bars.time[index - 1], "embedded-1", net_return=0.0001)
    journal.close()
    return journal


def test_replay_of_the_journal_uses_the_recorded_features(bot: Bot) -> None:
    record_session(bot, 300)

    report = replay_json(bot, "--journal", "--candidate", bot.model)

    assert report["bars"] == 300
    assert report["incumbent"]["decisions"] == 300
    assert report["agreement"] == 1.0


def test_replay_of_an_empty_journal_says_so(bot: Bot) -> None:
    done = bot.run("replay", "--journal")

    assert done.returncode == 1
    assert done.said == [
        f"replay failed: no decision journal at {bot.models / '.sync' / 'journal.sqlite3'}"
    ]


def test_status_json_reports_trading_figures_per_version(bot: Bot) -> None:
    record_session(bot, 120)

    done = bot.run("status", "--json")

    assert done.returncode == 0, done.stderr
    trading = json.loads(done.stdout)["trading"]
    assert trading["journal"] == str(bot.models / ".sync" / "journal.sqlite3")
    figures = trading["versions"]["embedded-1"]
    assert figures["decisions"] == 120
    assert figures["source"] == "paper"
    assert figures["net_return"] == pytest.approx(119 * 0.0001)
    assert {"trades", "win_rate", "max_drawdown", "sharpe"} <= set(figures)
    human = bot.run("status")
    assert "trading embedded-1 (paper): 120 decisions" in human.stdout


@pytest.fixture
def start_host(bot: Bot) -> Iterator[Callable[..., RunningHost]]:
    started: list[RunningHost] = []

    def start(*args: str, env: Mapping[str, str]) -> RunningHost:
        host = RunningHost(bot.command(*args), cwd=bot.cwd, env=env)
        started.append(host)
        return host

    yield start
    for host in started:
        host.close()


def test_the_host_trades_on_csv_bars_then_keeps_serving(
    bot: Bot, pandas_csv: Path, start_host: Callable[..., RunningHost]
) -> None:
    env = app_environment(
        MARKET__SOURCE="csv", MARKET__CSV_PATH=str(pandas_csv), MARKET__BARS_PER_SECOND="0",
        BRAIN__LOG_EVERY="500",
    )  # fmt: skip
    host = start_host("run", env=env)

    ended = host.wait_for(lambda line: "[TRADING] End of" in line, timeout=40)
    assert f"after {BARS} bars and {BARS - (WARMUP_BARS - 1)} decisions" in host.lines[ended]
    assert any(f"Trading on paper on {pandas_csv}" in line for line in host.lines)
    # One line per 500 bars (brain.log_every), once deciding: bars 500, 1000, ... 20,000.
    assert sum("📈 [TRADING] 20" in line for line in host.lines) == BARS // 500
    assert host.process.poll() is None  # the feed stopped; the host did not
    assert host.stop() == 0

    status = bot.run("status", "--json")
    figures = json.loads(status.stdout)["trading"]["versions"]["embedded-1"]
    assert figures["decisions"] == BARS - (WARMUP_BARS - 1)
    replayed = replay_json(bot, "--bars", pandas_csv)["incumbent"]
    # The host's journaled paper figures are replay's, bar for bar (the last decision has
    # no outcome on either side).
    assert figures["net_return"] == pytest.approx(replayed["net_return"], abs=1e-9)
    assert figures["gross_return"] == pytest.approx(replayed["gross_return"], abs=1e-9)


def test_smoke_reads_the_first_csv_bar_and_names_a_bad_file(bot: Bot, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,open,high,low,close,volume\n", encoding="utf-8")
    env = app_environment(MARKET__SOURCE="csv", MARKET__CSV_PATH=str(bad))

    done = bot.run("--smoke", env=env)

    assert done.returncode == 1
    reason = "no time column (timestamp, date, datetime, time, or an unnamed first column)"
    assert done.said == [f"smoke test failed: {bad} line 1: {reason}"]
