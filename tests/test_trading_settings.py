"""The trading loop's settings: market, trading, journal, brain.log_every."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.settings import load_settings


def test_defaults_trade_the_synthetic_market_on_paper() -> None:
    settings = load_settings(None)

    assert settings.market.source == "synthetic"
    assert settings.market.bars_per_second == 1
    assert settings.trading.cost_bps == 1
    assert settings.journal.enabled
    assert settings.brain.log_every == 10
    assert settings.journal_path == settings.models_dir / ".sync" / "journal.sqlite3"


def test_the_repository_settings_file_matches_the_defaults() -> None:
    from_file = load_settings(Path(__file__).resolve().parent.parent / "settings.yaml")
    defaults = load_settings(None)

    for section in ("market", "trading", "journal"):
        assert getattr(from_file, section) == getattr(defaults, section)
    assert from_file.brain.log_every == defaults.brain.log_every


def test_csv_bars_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARKET__SOURCE", "csv")
    monkeypatch.setenv("MARKET__CSV_PATH", "bars.csv")

    settings = load_settings(None)

    assert settings.market.source == "csv"
    assert settings.market.csv_path == Path("bars.csv")


def test_a_relative_csv_path_in_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "settings.yaml"
    path.parent.mkdir()
    path.write_text("market:\n  source: csv\n  csv_path: data/bars.csv\n", encoding="utf-8")

    settings = load_settings(path)

    assert settings.market.csv_path == tmp_path / "conf" / "data" / "bars.csv"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"market": {"source": "csv"}}, "market: Value error, market.csv_path must be set"),
        ({"market": {"source": "ticker"}}, "market.source"),
        ({"market": {"bars_per_second": -1}}, "market.bars_per_second"),
        ({"trading": {"cost_bps": -0.5}}, "trading.cost_bps"),
        ({"journal": {"max_rows": 0}}, "journal.max_rows"),
        ({"brain": {"log_every": 0}}, "brain.log_every"),
    ],
)
def test_bad_values_name_their_key(overrides: dict[str, dict[str, object]], key: str) -> None:
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        load_settings(None, **overrides)
