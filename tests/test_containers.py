"""The composition root: dependencies declared, Core embeddable, providers overridable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from dependency_injector import containers, providers

from app.brain.brain import TradingBrain
from app.containers import Application, Core, resolve
from app.services.sync import CloudModelSynchronizationService
from app.settings import Settings
from tests.conftest import make_settings
from tests.onnx_models import decision_model, save

opened: list[aiohttp.ClientSession] = []


@asynccontextmanager
async def counted_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        opened.append(session)
        yield session


class BotHost(containers.DeclarativeContainer):
    """A larger bot that embeds Core with its own session and its own brain."""

    config = providers.Dependency(instance_of=Settings)
    http = providers.Resource(counted_session)
    brain = providers.Singleton(lambda s: TradingBrain(s.brain), config)
    core = providers.Container(Core, config=config, http=http, brain=brain)


@pytest.fixture
def token_settings(models_dir: Path) -> Settings:
    return make_settings(models_dir, github={"token": "t0ken", "api_url": "http://127.0.0.1:9"})


def test_the_containers_declare_every_dependency(token_settings: Settings) -> None:
    Application(config=token_settings).check_dependencies()
    BotHost(config=token_settings).check_dependencies()


def test_core_alone_says_what_it_is_missing() -> None:
    with pytest.raises(Exception, match="config"):
        Core().check_dependencies()


async def test_a_host_embeds_core_with_its_own_session_and_brain(token_settings: Settings) -> None:
    opened.clear()
    host = BotHost(config=token_settings)
    await host.init_resources()
    try:
        sync: CloudModelSynchronizationService = await resolve(host.core.sync)
        session = await resolve(host.http)
        brain = host.brain()
        github = await resolve(host.core.github)

        assert github is not None
        assert github._session is session
        assert host.core.installer()._models.brain is brain
        assert host.core.models().brain is brain
        assert sync.enabled
        assert opened == [session]  # Core opened none of its own
    finally:
        await host.shutdown_resources()
    assert session.closed


async def test_the_application_opens_one_session_and_closes_it(token_settings: Settings) -> None:
    app = Application(config=token_settings)
    await app.init_resources()
    session = await resolve(app.http)
    github = await resolve(app.core.github)
    assert github._session is session
    await app.shutdown_resources()
    assert session.closed


async def test_optional_collaborators_may_be_absent(token_settings: Settings) -> None:
    async with aiohttp.ClientSession() as session:
        core = Core(config=token_settings, http=session)
        sync = await resolve(core.sync)
        assert core.brain() is None
        assert sync._resilience is None
        assert sync._monitoring is None
        assert core.installer()._models is None


async def test_no_token_means_no_github_client(models_dir: Path) -> None:
    async with aiohttp.ClientSession() as session:
        core = Core(config=make_settings(models_dir), http=session)
        assert await resolve(core.github) is None
        assert not (await resolve(core.sync)).enabled


async def test_providers_are_overridden_not_monkeypatched(
    token_settings: Settings, models_dir: Path
) -> None:
    class RecordingBrain(TradingBrain):
        published = 0

        def publish(self, models):  # type: ignore[no-untyped-def]
            RecordingBrain.published += 1
            return super().publish(models)

    app = Application(config=token_settings)
    app.brain.override(providers.Singleton(RecordingBrain, token_settings.brain))
    models = app.models()
    assert isinstance(models.brain, RecordingBrain)
    await models.start()
    candidate = save(decision_model(seed=4, version="v9"), models_dir.parent / "c.onnx")
    assert await models.brain.reload_models(candidate)
    assert RecordingBrain.published == 2  # the start, then the reload
    app.brain.reset_override()
