"""The host's lifecycle end to end: a market whose returns are autocorrelated, a momentum model
that earns on it and its inverse that loses, and the standalone container assembled as
``python -m app`` assembles it, with the bars stepped by the test.

The bars are stepped rather than paced so each test says exactly when a model arrives; every
other part is the real one: the container's trading loop, lifecycle, installer, journal, alerts
(to a real SMTP server), inbox and sync (against the fake GitHub).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.containers import Application, resolve
from app.install.installer import ModelInstaller
from app.lifecycle.controller import ModelLifecycle
from app.ops import OpsServer
from app.services.alerts import EmailAlerts
from app.settings import Settings
from app.trading.bars import Bar
from app.trading.journal import DecisionJournal
from app.trading.loop import TradingLoop
from app.trading.market import bar_feed
from tests.conftest import make_settings
from tests.onnx_models import momentum_model, save

SLOT = "unified_brain"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC


def momentum_csv(
    path: Path, *, bars: int = 3000, phi: float = 0.5, seed: int = 3, bar_seconds: float = 60
) -> Path:
    """Bars (a minute apart) whose returns follow an AR(1) with coefficient `phi` (8 bps)."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(bars)
    noise = rng.standard_normal(bars) * 0.0008
    for i in range(1, bars):
        returns[i] = phi * returns[i - 1] + noise[i]
    close = 100.0 * np.cumprod(1.0 + returns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        previous = 100.0
        for i, price in enumerate(close):
            when = START + timedelta(seconds=i * bar_seconds)
            high, low = max(previous, price) * 1.0002, min(previous, price) * 0.9998
            volume = 1000 + int(abs(returns[i]) * 1e6)
            writer.writerow([when.isoformat(), previous, high, low, price, volume])
            previous = price
    return path


def momentum_file(folder: Path, sign: float, version: str) -> Path:
    return save(momentum_model(sign, version=version), folder / f"{version}.onnx")


def lifecycle_settings(models_dir: Path, csv_path: Path, **sections: Any) -> Settings:
    """The host's settings on `csv_path`, judging with a 60-minute canary (60 bars)."""
    lifecycle = {"canary_minutes": 60, "min_trades": 5, **sections.pop("lifecycle", {})}
    market = {"source": "csv", "csv_path": str(csv_path), "bars_per_second": 0}
    journal = {"flush_seconds": 0.02, **sections.pop("journal", {})}
    cloud_sync = {"sync_on_startup": False, **sections.pop("cloud_sync", {})}
    ops = {"port": 0, **sections.pop("ops", {})}
    return make_settings(
        models_dir,
        market=market,
        lifecycle=lifecycle,
        journal=journal,
        cloud_sync=cloud_sync,
        ops=ops,
        **sections,
    )


def champion_dir(root: Path) -> Path:
    """A models directory whose active model is the momentum model, version momentum-1."""
    models_dir = root / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    built = momentum_file(root / "built", 1.0, "momentum-1")
    shutil.copyfile(built, models_dir / "unified_brain.onnx")
    return models_dir


@dataclass
class LifecycleHost:
    """The standalone container over a models directory, its bars stepped one at a time."""

    settings: Settings
    container: Application
    models: ModelInstaller
    lifecycle: ModelLifecycle
    loop: TradingLoop
    bars: Iterator[Bar]
    ops: OpsServer
    stepped: int = 0
    fake: Any = None  # the fake GitHub, when the test offers models through sync or webhook
    closed: bool = False

    @classmethod
    async def start(cls, settings: Settings) -> LifecycleHost:
        container = Application(config=settings)
        result = container.init_resources()
        if result is not None:
            await result
        models: ModelInstaller = container.models()
        await models.start(strict=True)
        lifecycle = container.lifecycle()
        assert lifecycle is not None
        await lifecycle.start()
        loop = container.trading()
        ops: OpsServer = await resolve(container.ops)
        await ops.start()  # on port 0: the port it got is ops.port
        market = settings.market
        feed = bar_feed(
            "csv", csv_path=market.csv_path, seed=market.seed, bar_seconds=market.bar_seconds
        )
        return cls(settings, container, models, lifecycle, loop, iter(feed.bars), ops)

    @property
    def journal(self) -> DecisionJournal:
        journal: DecisionJournal | None = self.container.journal()
        assert journal is not None
        return journal

    def trading_version(self) -> str:
        return self.models.brain.snapshot.deciding.version

    async def advance(self, count: int) -> None:
        """Trade the next `count` bars."""
        for _ in range(count):
            await self.loop.step_async(next(self.bars))
            self.stepped += 1

    async def until(self, done: Callable[[], bool], *, limit: int) -> int:
        """Trade bars until `done()`; how many it took (AssertionError past `limit`)."""
        for taken in range(1, limit + 1):
            await self.advance(1)
            if done():
                return taken
        raise AssertionError(f"not done after {limit} bars")

    async def settle(self) -> None:
        """Let background work (the judge's rollback, quarantine, alerts) finish."""
        await self.lifecycle.settled()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ops.port}"

    async def close(self) -> None:
        """Stop as the host does (also with ``journal.enabled: false``, and twice)."""
        if self.closed:
            return
        self.closed = True
        await self.ops.stop()
        await self.lifecycle.stop()
        alerts: EmailAlerts = self.container.alerts()
        await alerts.aclose()
        journal: DecisionJournal | None = self.container.journal()
        if journal is not None:
            journal.close()
        result = self.container.shutdown_resources()
        if result is not None:
            await result

    async def resolve(self, provider: Any) -> Any:
        return await resolve(provider)
