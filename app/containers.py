"""The composition root, mirroring the seed's Program.cs.

``Core`` is embeddable: it declares what it needs (the settings, an aiohttp session, and the
seed's optional collaborators) and builds the services from them. A larger bot host embeds it::

    core = providers.Container(Core, config=settings, http=my_session, brain=my_brain)

``Application`` is the standalone root used by ``python -m app``: it owns the one
``ClientSession`` (a Resource, closed on shutdown) and builds the brain and its collaborators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from dependency_injector import containers, providers

from app.brain.brain import TradingBrain
from app.brain.store import ModelStore
from app.settings import Settings


@asynccontextmanager
async def http_session(timeout_seconds: float) -> AsyncIterator[aiohttp.ClientSession]:
    """The process's one HTTP session; per-read timeouts, since artifact downloads are long."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
    )
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        yield session


def model_store(settings: Settings) -> ModelStore:
    return ModelStore(settings.models_dir, lock_wait_seconds=settings.models.lock_wait_seconds)


def trading_brain(settings: Settings, store: ModelStore) -> TradingBrain:
    return TradingBrain(settings.brain, store, backup_retention=settings.models.backup_retention)


class Core(containers.DeclarativeContainer):
    """The services around the brain; embeddable in a host that brings its own session."""

    config = providers.Dependency(instance_of=Settings)
    http = providers.Dependency(instance_of=aiohttp.ClientSession)
    # Optional collaborators, as in the seed's constructor: absent means "work with less".
    brain: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))
    resilience: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))
    monitoring: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))


class Application(containers.DeclarativeContainer):
    """The standalone host: `python -m app`."""

    config = providers.Dependency(instance_of=Settings)
    http = providers.Resource(http_session, config.provided.resilience.http_timeout_seconds)
    store = providers.Singleton(model_store, config)
    brain = providers.Singleton(trading_brain, config, store)
    core = providers.Container(Core, config=config, http=http, brain=brain)
