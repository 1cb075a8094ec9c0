"""The bot as ``python -m app`` wires it, for tests and benchmarks: the Application container
around a real brain, its ops server on 127.0.0.1, and an HTTP client to talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from dependency_injector import providers

from app.brain.brain import TradingBrain
from app.containers import Application, resolve
from app.install.installer import ModelInstaller
from app.ops import OpsServer
from app.services.monitoring import ProductionMonitoringService
from app.services.sync import CloudModelSynchronizationService
from app.services.webhook import WebhookDispatcher
from app.settings import Settings
from tests.conftest import make_settings
from tests.fakes.github import FakeGitHub
from tests.metrics import Series, parse_metrics

SLOT = "unified_brain"
EMBEDDED_VERSION = "embedded-1"
FEATURES = [0.1] * 16


def ops_settings(models_dir: Path, fake: FakeGitHub | None = None, **sections: Any) -> Settings:
    """Settings for a stack on loopback port 0; GitHub is the fake when one is given."""
    github = sections.pop("github", {})
    if fake is not None:
        github = {
            "owner": fake.owner,
            "repository": fake.repository,
            "token": fake.token,
            "api_url": fake.api_url,
            **github,
        }
    return make_settings(
        models_dir,
        github=github,
        ops={"port": 0, **sections.pop("ops", {})},
        cloud_sync={"min_interval_minutes": 0, **sections.pop("cloud_sync", {})},
        **sections,
    )


@dataclass
class OpsStack:
    """A started brain and ops server, as `python -m app` wires them, plus an HTTP client."""

    container: Application
    brain: TradingBrain
    server: OpsServer
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def monitoring(self) -> ProductionMonitoringService:
        monitoring: ProductionMonitoringService = self.container.monitoring()
        return monitoring

    @property
    def sync(self) -> CloudModelSynchronizationService:
        sync: CloudModelSynchronizationService = self.container.core.sync()
        return sync

    @property
    def webhooks(self) -> WebhookDispatcher:
        webhooks: WebhookDispatcher = self.container.core.webhooks()
        return webhooks

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def post(
        self, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.http.post(self.url + path, data=body, headers=headers) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def metrics(self) -> dict[Series, float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return parse_metrics(text)

    @property
    def models(self) -> ModelInstaller:
        installer: ModelInstaller = self.container.models()
        return installer

    def serving(self) -> str:
        """The version that makes decisions now."""
        return self.brain.decide(FEATURES).versions[SLOT]


def installer_on_clock(
    settings: Settings, brain: TradingBrain, clock: Callable[[], datetime]
) -> ModelInstaller:
    """The container's installer, but taking backup times from `clock`."""
    return ModelInstaller(settings, brain, clock=clock)


@asynccontextmanager
async def running_ops(
    settings: Settings, *, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[OpsStack]:
    """The Application container with our own session, its brain started, its ops server up."""
    async with aiohttp.ClientSession() as http:
        container = Application(config=settings)
        container.http.override(providers.Object(http))
        if clock is not None:
            container.core.models.override(
                providers.Singleton(installer_on_clock, container.config, container.brain, clock)
            )
        models: ModelInstaller = container.models()
        await models.start()
        brain = models.brain
        server: OpsServer = await resolve(container.ops)
        await server.start()
        try:
            yield OpsStack(container, brain, server, http)
        finally:
            await server.stop()
            await container.alerts().aclose()
