"""Validation warms a candidate up on the journal's recent real feature rows, not only probes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.brain.models import Candidate
from app.containers import trading_brain
from app.install.installer import ModelInstaller
from app.settings import Settings
from app.trading.journal import DecisionJournal
from app.trading.loop import TradingLoop
from app.trading.market import BarFeed
from app.trading.synthetic import synthetic_bars

SLOT = "unified_brain"


@pytest.fixture
def journal(settings: Settings) -> Iterator[DecisionJournal]:
    opened = DecisionJournal(settings.journal_path, flush_seconds=0.02)
    yield opened
    opened.close()


async def journaled_brain(settings: Settings, journal: DecisionJournal) -> ModelInstaller:
    models = ModelInstaller(settings, trading_brain(settings, journal=journal))
    await models.start()
    return models


async def test_a_model_broken_only_on_real_rows_is_refused_when_the_journal_has_them(
    settings: Settings, journal: DecisionJournal, model_file: Callable[..., Path]
) -> None:
    models = await journaled_brain(settings, journal)
    brain = models.brain
    loop = TradingLoop(brain, BarFeed("bars", iter(())), cost_bps=1, journal=journal)
    for bar in synthetic_bars(300, seed=4).bars():
        loop.step(bar)
    journal.flush()
    recent = journal.recent_features(1000, 16)
    assert recent is not None
    assert recent.shape == (240, 16)

    result = await models.swap_in([Candidate(SLOT, model_file(nan_above=20.0, version="bad"))])

    assert not result.ok
    assert "not finite (NaN or infinity) on 240 of 240 journaled feature rows" in result.reason
    assert brain.decide(recent[-1]).versions == {SLOT: "embedded-1"}


async def test_with_an_empty_journal_the_probe_input_is_the_fallback(
    settings: Settings, journal: DecisionJournal, model_file: Callable[..., Path]
) -> None:
    models = await journaled_brain(settings, journal)
    brain = models.brain

    # Fine on probe input: with nothing journaled, nothing shows the fault.
    result = await models.swap_in([Candidate(SLOT, model_file(nan_above=20.0, version="bad"))])

    assert result.ok
    assert brain.snapshot.versions == {SLOT: "bad"}


async def test_only_the_newest_thousand_rows_are_used(
    settings: Settings, journal: DecisionJournal, model_file: Callable[..., Path]
) -> None:
    models = await journaled_brain(settings, journal)
    brain = models.brain
    loop = TradingLoop(brain, BarFeed("bars", iter(())), cost_bps=1, journal=journal)
    for bar in synthetic_bars(1500, seed=4).bars():
        loop.step(bar)
    journal.flush()

    result = await models.swap_in([Candidate(SLOT, model_file(nan_above=20.0, version="bad"))])

    assert result.reason.endswith(" of 1000 journaled feature rows")
