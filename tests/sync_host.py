"""The sync service graph, assembled as the running bot does, over the fake GitHub.

Shared by the ``test_sync_*`` modules. Each test assembles the graph as the host does (``Core``
with a real aiohttp session, a started brain, the resilience and monitoring services) on a real
models directory, and judges only what can be observed: the model that decides, files on disk,
the sync state, the requests the fake received and the log lines. The fixtures here
(``start_host``, ``host``) reach the tests as a plugin named in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.brain.brain import TradingBrain
from app.containers import Core, resilience_service, resolve, trading_brain
from app.install.installer import ModelInstaller
from app.services.github import GitHubActionsClient
from app.services.inbox import LocalInbox
from app.services.monitoring import ProductionMonitoringService
from app.services.state import StateStore
from app.services.sync import CloudModelSynchronizationService
from app.settings import Settings
from tests.artifacts import model_artifact, sha256_hex
from tests.conftest import make_settings
from tests.fakes.github import FakeGitHub, FakeRun

FEATURES = [0.1] * 16
EMBEDDED_VERSION = "embedded-1"
SLOT = "unified_brain"


@dataclass
class Host:
    """One service graph over a models directory, assembled as the running bot does."""

    settings: Settings
    brain: TradingBrain
    models: ModelInstaller
    core: Core
    sync: CloudModelSynchronizationService
    state: StateStore
    monitoring: ProductionMonitoringService

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    def serving(self) -> dict[str, str]:
        """The model versions that make a decision right now."""
        return dict(self.brain.decide(FEATURES).versions)

    def provenance(self, slot: str = SLOT) -> dict[str, Any]:
        path = self.models_dir / ".sync" / "installed" / f"{slot}.json"
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def state_file(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.models_dir / ".sync" / "state.json").read_text())
        return loaded

    def artifact_record(self, artifact_id: int) -> dict[str, Any]:
        record: dict[str, Any] = self.state_file()["artifacts"][str(artifact_id)]
        return record

    async def github(self) -> GitHubActionsClient:
        client: GitHubActionsClient = await resolve(self.core.github)
        return client

    async def inbox(self) -> LocalInbox:
        inbox: LocalInbox = await resolve(self.core.inbox)
        return inbox


HostFactory = Callable[..., Awaitable[Host]]


def fake_settings(fake: FakeGitHub, models_dir: Path, **sections: Any) -> Settings:
    """Settings pointing at the fake, with small limits and near-instant retries."""
    github = {"api_url": fake.api_url, "token": fake.token, "owner": fake.owner}
    github |= {"repository": fake.repository, "per_page": 2, **sections.pop("github", {})}
    cloud_sync = {"min_interval_minutes": 0, **sections.pop("cloud_sync", {})}
    resilience = {"max_retries": 2, "base_delay_seconds": 0.01, "max_delay_seconds": 2}
    resilience |= sections.pop("resilience", {})
    models = {"max_artifact_mb": 4, "max_uncompressed_mb": 16, **sections.pop("models", {})}
    return make_settings(
        models_dir,
        github=github,
        cloud_sync=cloud_sync,
        resilience=resilience,
        models=models,
        **sections,
    )


@pytest.fixture
async def start_host() -> AsyncIterator[HostFactory]:
    """A factory of service graphs; each has its own session and brain, closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(settings: Settings, *, bare: bool = False) -> Host:
            """``bare``: without the optional resilience and monitoring services."""
            session = await stack.enter_async_context(aiohttp.ClientSession())
            brain = trading_brain(settings)
            monitoring = ProductionMonitoringService()
            core = Core(config=settings, http=session, brain=brain)
            models = await resolve(core.models)
            await models.start()
            if not bare:
                core.resilience.override(resilience_service(settings, monitoring))
                core.monitoring.override(monitoring)
            core.check_dependencies()
            sync = await resolve(core.sync)
            state = await resolve(core.state)
            return Host(settings, brain, models, core, sync, state, monitoring)

        yield start


@pytest.fixture
async def host(fake: FakeGitHub, models_dir: Path, start_host: HostFactory) -> Host:
    return await start_host(fake_settings(fake, models_dir))


def good_run(fake: FakeGitHub, version: str, **run: Any) -> tuple[FakeRun, int]:
    """A successful push run on main with one good model artifact; (run, artifact id)."""
    created = fake.add_run(**run)
    artifact = fake.add_artifact(created, "trained-model", model_artifact(version))
    return created, artifact.id


def tree(root: Path, *, skip: str | None = ".sync") -> dict[str, str]:
    """Every file under ``root`` (but ``skip``) with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(root)): sha256_hex(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and (skip is None or skip not in path.relative_to(root).parts)
    }


def backups(host: Host) -> list[str]:
    folder = host.models_dir / "backup"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
