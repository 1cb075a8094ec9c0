"""Shared fixtures: a models directory with a real default model, settings pointing at it,
a started brain, loguru output captured as plain lines, the fake GitHub and a real SMTP server."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina
from aiosmtpd.controller import Controller
from loguru import logger

from app.brain.brain import TradingBrain
from app.install.installer import ModelInstaller
from app.settings import Settings, load_settings
from tests.fakes.github import FakeGitHub, running_fake_github
from tests.onnx_models import decision_model, save
from tests.smtp_server import Inbox, serving

# The sync service graph (`start_host`, `host`) that the test_sync_* modules share.
pytest_plugins = ("tests.sync_host",)

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's or CI's environment must not leak into settings under test."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in {"GITHUB_TOKEN", "GITHUB_API_URL", "APP_SETTINGS"} or "__" in upper:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _real_stamina() -> Iterator[None]:
    """Real retries (waits honoured: tests measure retry-after); stamina's global modes restored."""
    was_active = stamina.is_active()
    stamina.set_active(True)
    with stamina.set_testing(False):
        yield
    stamina.set_active(was_active)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding a copy of the embedded default model."""
    directory = tmp_path / "models"
    directory.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, directory / "unified_brain.onnx")
    return directory


def make_settings(models_dir: Path, **sections: Any) -> Settings:
    """Settings with no file behind them, the models directory at `models_dir`."""
    models = {"dir": str(models_dir), "lock_wait_seconds": 0, **sections.pop("models", {})}
    return load_settings(None, models=models, **sections)


@pytest.fixture
def settings(models_dir: Path) -> Settings:
    return make_settings(models_dir)


async def start_models(settings: Settings, **brain_options: Any) -> ModelInstaller:
    """A brain and its installer over `settings`' models directory, started."""
    models = ModelInstaller(settings, TradingBrain(settings.brain, **brain_options))
    await models.start()
    return models


@pytest.fixture
async def models(settings: Settings) -> ModelInstaller:
    """The started installer of the `settings` models directory (its brain is `brain`)."""
    return await start_models(settings)


@pytest.fixture
def brain(models: ModelInstaller) -> TradingBrain:
    return models.brain


@pytest.fixture
def model_file(tmp_path: Path) -> Any:
    """A factory: `model_file("name.onnx", seed=1, ...)` writes a decision model and returns it."""

    def build(name: str = "candidate.onnx", **kwargs: Any) -> Path:
        return save(decision_model(**kwargs), tmp_path / "candidates" / name)

    return build


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every loguru message this package logs during the test, one string each."""
    lines: list[str] = []
    logger.enable("app")
    sink = logger.add(lambda message: lines.append(str(message).rstrip("\n")), format="{message}")
    yield lines
    logger.remove(sink)
    logger.disable("app")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    """The fake GitHub (API and blob host) on loopback, empty."""
    async with running_fake_github() as github:
        yield github


@pytest.fixture
def inbox() -> Inbox:
    """Where the `smtp` server keeps the mail it accepts."""
    return Inbox()


@pytest.fixture
def smtp(inbox: Inbox) -> Iterator[Controller]:
    """A real SMTP server on 127.0.0.1 delivering into `inbox`."""
    with serving(inbox) as controller:
        yield controller
