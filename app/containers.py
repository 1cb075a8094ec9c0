"""The composition root, mirroring the seed's Program.cs.

``Core`` is embeddable: it declares what it needs (the settings, an aiohttp session, and the
seed's optional collaborators) and builds the services from them. A larger bot host embeds it::

    core = providers.Container(Core, config=settings, http=my_session, brain=my_brain)

``Application`` is the standalone root used by ``python -m app``: it owns the one
``ClientSession`` (a Resource, closed on shutdown) and builds the brain and its collaborators.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from dependency_injector import containers, providers

from app.brain.brain import TradingBrain
from app.brain.health import DecisionHealth
from app.install.installer import ModelInstaller
from app.lifecycle.controller import ModelLifecycle
from app.ops import OpsServer
from app.services.alerts import EmailAlerts
from app.services.github import GitHubActionsClient
from app.services.inbox import LocalInbox
from app.services.installer import ArtifactInstaller
from app.services.memory import MLMemoryManager
from app.services.monitoring import ProductionMonitoringService
from app.services.observers import observe_brain
from app.services.resilience import ProductionResilienceService
from app.services.state import StateStore
from app.services.sync import CloudModelSynchronizationService
from app.services.webhook import WebhookDispatcher
from app.settings import Settings
from app.trading.journal import DecisionJournal
from app.trading.loop import TradingLoop
from app.trading.market import bar_feed


async def resolve(provider: Any) -> Any:
    """A provider's object, whether it is built synchronously or (behind a Resource) not."""
    value = provider()
    if inspect.isawaitable(value):
        value = await value
    return value


@asynccontextmanager
async def http_session(timeout_seconds: float) -> AsyncIterator[aiohttp.ClientSession]:
    """The process's one HTTP session; per-read timeouts, since artifact downloads are long."""
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
    )
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        yield session


def trading_brain(
    settings: Settings,
    memory: MLMemoryManager | None = None,
    journal: DecisionJournal | None = None,
) -> TradingBrain:
    """The brain: memory-guarded, and warmed up on the journal's recent rows when there is one."""
    width = len(settings.brain.features)
    return TradingBrain(
        settings.brain,
        memory_guard=memory,
        recent_features=None if journal is None else lambda: journal.recent_features(1000, width),
    )


def decision_health(settings: Settings) -> DecisionHealth:
    """What /readyz knows of the decision job; a bar is expected every 1/bars_per_second."""
    rate = settings.market.bars_per_second
    return DecisionHealth(1.0 / rate if rate > 0 else 0.0)


def model_installer(settings: Settings, brain: TradingBrain | None) -> ModelInstaller | None:
    """The one writer of the models directory, for `brain` (None without a brain)."""
    return None if brain is None else ModelInstaller(settings, brain)


def observed_installer(
    models: ModelInstaller | None,
    monitoring: ProductionMonitoringService | None,
    alerts: EmailAlerts | None,
) -> ModelInstaller | None:
    """The standalone host's installer, with metrics and alerts attached to it and its brain."""
    return None if models is None else observe_brain(models, monitoring, alerts)


def decision_journal(
    settings: Settings, monitoring: ProductionMonitoringService | None = None
) -> DecisionJournal | None:
    """The decision journal under models/.sync/, or None when ``journal.enabled`` is false."""
    if not settings.journal.enabled:
        return None
    journal = DecisionJournal(
        settings.journal_path,
        decision_slot=settings.brain.decision_slot,
        retention_days=settings.journal.retention_days,
        max_rows=settings.journal.max_rows,
        flush_seconds=settings.journal.flush_seconds,
    )
    if monitoring is not None:
        monitoring.watch_journal(lambda: journal.counts)
    return journal


def model_lifecycle(
    settings: Settings,
    models: ModelInstaller | None,
    journal: DecisionJournal | None,
    alerts: EmailAlerts | None,
    monitoring: ProductionMonitoringService | None,
) -> ModelLifecycle | None:
    """Shadow, canary and the judge for new models; None with ``lifecycle.mode: direct`` (the
    seed's swap), or without a trading loop to judge them on."""
    if models is None or not settings.judges_models:
        return None
    return ModelLifecycle(settings, models, journal=journal, alerts=alerts, observer=monitoring)


def trading_loop(  # noqa: PLR0917 - a provider's positional wiring
    settings: Settings,
    brain: TradingBrain,
    journal: DecisionJournal | None,
    monitoring: ProductionMonitoringService | None,
    health: DecisionHealth | None = None,
    lifecycle: ModelLifecycle | None = None,
) -> TradingLoop | None:
    """Paper trading over the configured market, or None when ``trading.enabled`` is false."""
    if not settings.trading.enabled:
        return None
    market = settings.market
    feed = bar_feed(
        market.source, csv_path=market.csv_path, seed=market.seed, bar_seconds=market.bar_seconds
    )
    return TradingLoop(
        brain,
        feed,
        cost_bps=settings.trading.cost_bps,
        bars_per_second=market.bars_per_second,
        log_every=settings.brain.log_every,
        journal=journal,
        observer=monitoring,
        resume_after=None if journal is None else journal.last_bar_time(),
        health=health,
        watcher=lifecycle,
    )


def sync_state(settings: Settings) -> StateStore:
    return StateStore(settings.models_dir)


def github_client(
    settings: Settings, http: aiohttp.ClientSession, state: StateStore
) -> GitHubActionsClient | None:
    """The GitHub client, or None without a token (the seed: sync disabled, other sources on)."""
    if not settings.github.token.get_secret_value():
        return None
    return GitHubActionsClient(http, settings.github, etag_cache=state)


def artifact_installer(
    settings: Settings, state: StateStore, models: ModelInstaller | None
) -> ArtifactInstaller:
    return ArtifactInstaller(settings, state, models)


def sync_service(
    settings: Settings,
    state: StateStore,
    installer: ArtifactInstaller,
    github: GitHubActionsClient | None,
    *,
    resilience: ProductionResilienceService | None,
    monitoring: ProductionMonitoringService | None,
) -> CloudModelSynchronizationService:
    return CloudModelSynchronizationService(
        settings, state, installer, github, resilience=resilience, monitoring=monitoring
    )


def local_inbox(
    settings: Settings,
    pipeline: ArtifactInstaller,
    monitoring: ProductionMonitoringService | None = None,
) -> LocalInbox:
    return LocalInbox(
        settings.models_dir,
        pipeline,
        poll_seconds=settings.cloud_sync.inbox_poll_seconds,
        monitoring=monitoring,
    )


def resilience_service(
    settings: Settings, monitoring: ProductionMonitoringService | None
) -> ProductionResilienceService:
    hook = monitoring.set_breaker_state if monitoring is not None else None
    return ProductionResilienceService(settings.resilience, on_state_change=hook)


class Core(containers.DeclarativeContainer):
    """The services around the brain; embeddable in a host that brings its own session."""

    config = providers.Dependency(instance_of=Settings)
    http = providers.Dependency(instance_of=aiohttp.ClientSession)
    # Optional collaborators, as in the seed's constructor: absent means "work with less".
    brain: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))
    resilience: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))
    monitoring: providers.Dependency[Any] = providers.Dependency(default=providers.Object(None))

    models = providers.Singleton(model_installer, config, brain)
    state = providers.Singleton(sync_state, config)
    github = providers.Singleton(github_client, config, http, state)
    installer = providers.Singleton(artifact_installer, config, state, models)
    sync = providers.Singleton(
        sync_service,
        config,
        state,
        installer,
        github,
        resilience=resilience,
        monitoring=monitoring,
    )
    inbox = providers.Singleton(local_inbox, config, installer, monitoring)
    webhooks = providers.Singleton(WebhookDispatcher, config, sync)


class Application(containers.DeclarativeContainer):
    """The standalone host: `python -m app`."""

    config = providers.Dependency(instance_of=Settings)
    http = providers.Resource(http_session, config.provided.resilience.http_timeout_seconds)
    monitoring = providers.Singleton(ProductionMonitoringService)
    resilience = providers.Singleton(resilience_service, config, monitoring)
    alerts = providers.Singleton(EmailAlerts, config.provided.alerts)
    memory = providers.Singleton(MLMemoryManager, config.provided.memory)
    journal = providers.Singleton(decision_journal, config, monitoring)
    brain = providers.Singleton(trading_brain, config, memory, journal=journal)
    decisions = providers.Singleton(decision_health, config)
    core = providers.Container(
        Core,
        config=config,
        http=http,
        brain=brain,
        resilience=resilience,
        monitoring=monitoring,
    )
    # The brain's installer, observed: every swap counted and alerted, whatever its source.
    models = providers.Singleton(observed_installer, core.models, monitoring, alerts)
    lifecycle = providers.Singleton(model_lifecycle, config, models, journal, alerts, monitoring)
    trading = providers.Singleton(
        trading_loop, config, brain, journal, monitoring, decisions, lifecycle
    )
    ops = providers.Singleton(
        OpsServer,
        config,
        models,
        core.state,
        core.installer,
        core.webhooks,
        monitoring=monitoring,
        resilience=resilience,
        decisions=decisions,
        lifecycle=lifecycle,
    )
