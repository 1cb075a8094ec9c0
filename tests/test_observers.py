"""The brain's events reach the operator: alerts through a real SMTP server (aiosmtpd) on
127.0.0.1, and reload metrics; a mail server that is down or slow never holds up a swap."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from app.brain.brain import TradingBrain
from app.install.installer import ModelInstaller
from app.services.alerts import EmailAlerts
from app.services.monitoring import ProductionMonitoringService
from app.services.observers import observe_brain
from tests.conftest import ROOT
from tests.metrics import parse_metrics, value
from tests.smtp_server import Inbox, alert_settings, free_port, serving

SLOT = "unified_brain"
EMBEDDED_VERSION = "embedded-1"
INSTALLED_SUBJECT = re.compile(r"^New models installed - version \d{8}_\d{6}$")
STALL_SECONDS = 5.0
INSTALL_BOUND_SECONDS = 2.0


def subjects(inbox: Inbox) -> list[str]:
    # A long subject arrives folded; a mail client drops the fold's leading space.
    return [str(delivery.message["Subject"]).strip() for delivery in inbox.deliveries]


@pytest.fixture
def alerts(smtp: Controller) -> EmailAlerts:
    return EmailAlerts(alert_settings(smtp.port))


# -- alerts for each kind of event --------------------------------------------------------------


async def test_an_install_mails_the_seeds_subject_with_the_new_version(
    brain: TradingBrain, models: ModelInstaller, alerts: EmailAlerts, inbox: Inbox, model_file: Any
) -> None:
    observe_brain(models, None, alerts)

    assert await brain.reload_models(model_file(version="2.0.0", seed=2))
    await alerts.aclose()

    [subject] = subjects(inbox)
    assert INSTALLED_SUBJECT.match(subject), subject
    [delivery] = inbox.deliveries
    body = delivery.message.get_content()
    assert f"{SLOT}: 2.0.0" in body
    assert "source: cli" in body


async def test_a_refusal_mails_why(
    brain: TradingBrain, models: ModelInstaller, alerts: EmailAlerts, inbox: Inbox, model_file: Any
) -> None:
    observe_brain(models, None, alerts)

    assert not await brain.reload_models(model_file(n_features=5))
    await alerts.aclose()

    [subject] = subjects(inbox)
    assert subject.startswith("Model update refused")
    assert "incompatible" in inbox.deliveries[0].message.get_content()
    assert brain.decide([0.0] * 16).versions == {SLOT: EMBEDDED_VERSION}


async def test_a_rollback_mails_the_backup_it_restored(
    brain: TradingBrain, models: ModelInstaller, alerts: EmailAlerts, inbox: Inbox, model_file: Any
) -> None:
    assert await brain.reload_models(model_file(version="2.0.0", seed=2))
    observe_brain(models, None, alerts)  # from here on: only the rollback is told
    [backup] = models.backups()

    result = await models.rollback()
    await alerts.aclose()

    assert result.ok
    assert subjects(inbox) == [f"Model rolled back - {SLOT} to {backup.name}"]
    body = inbox.deliveries[0].message.get_content()
    assert f"Now serving version: {EMBEDDED_VERSION}" in body


async def test_a_model_already_serving_mails_nothing(
    brain: TradingBrain, models: ModelInstaller, alerts: EmailAlerts, inbox: Inbox
) -> None:
    observe_brain(models, None, alerts)

    assert await brain.reload_models(brain.snapshot.models[SLOT].path)
    await alerts.aclose()

    assert inbox.deliveries == []


async def test_reloads_and_decisions_reach_monitoring(
    brain: TradingBrain, models: ModelInstaller, model_file: Any
) -> None:
    monitoring = ProductionMonitoringService()
    observe_brain(models, monitoring, None)

    assert await brain.reload_models(model_file(version="2.0.0", seed=2))
    assert not await brain.reload_models(model_file("bad.onnx", n_features=5))
    brain.decide([0.0] * 16)

    metrics = parse_metrics(monitoring.render()[0].decode())
    assert value(metrics, "trading_brain_reload_seconds_count", outcome="installed") == 1
    assert value(metrics, "trading_brain_reload_seconds_count", outcome="refused") == 1
    assert value(metrics, "trading_brain_decision_seconds_count") == 1


# -- never in the way of a swap -----------------------------------------------------------------


async def test_a_dead_mail_server_neither_delays_nor_breaks_an_install(
    brain: TradingBrain, models: ModelInstaller, model_file: Any, logs: list[str]
) -> None:
    alerts = EmailAlerts(alert_settings(free_port()))  # nothing listens there
    observe_brain(models, None, alerts)

    started = time.perf_counter()
    installed = await brain.reload_models(model_file(version="2.0.0", seed=2))
    elapsed = time.perf_counter() - started
    await alerts.aclose()

    assert installed
    assert elapsed < INSTALL_BOUND_SECONDS
    assert brain.decide([0.0] * 16).versions == {SLOT: "2.0.0"}
    assert any(line.startswith("⚠️ [ALERTS] Could not send alert") for line in logs)


async def test_a_stalling_mail_server_does_not_delay_an_install(
    brain: TradingBrain, models: ModelInstaller, model_file: Any
) -> None:
    stalling = Inbox(stall_seconds=STALL_SECONDS)
    with serving(stalling) as controller:
        # Alerts may wait longer than the stall: only the swap must not wait for them.
        alerts = EmailAlerts(alert_settings(controller.port, timeout_seconds=2 * STALL_SECONDS))
        observe_brain(models, None, alerts)

        started = time.perf_counter()
        installed = await brain.reload_models(model_file(version="2.0.0", seed=2))
        elapsed = time.perf_counter() - started

        assert installed
        assert elapsed < INSTALL_BOUND_SECONDS
        assert brain.decide([0.0] * 16).versions == {SLOT: "2.0.0"}
    # The server has stopped: the pending alert fails at once instead of waiting out its timeout.
    await alerts.aclose()
    assert stalling.deliveries == []


# -- the command line ---------------------------------------------------------------------------


@dataclass
class SlowToAccept(Inbox):
    """Takes `mail_delay` seconds to accept the sender, so a client that stops early sends
    nothing at all (a stall in DATA would let the message land after the client gave up)."""

    mail_delay: float = 0.0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.mail_delay)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def test_the_install_command_waits_for_its_alert(
    tmp_path: Path, models_dir: Path, model_file: Any
) -> None:
    slow = SlowToAccept(mail_delay=0.5)  # a distant server with STARTTLS takes about as long
    with serving(slow) as controller:
        settings = tmp_path / "settings.yaml"
        settings.write_text(
            yaml.safe_dump(
                {
                    "cloud_sync": {"enabled": False},
                    "models": {"dir": str(models_dir), "lock_wait_seconds": 0},
                    "alerts": alert_settings(controller.port).model_dump(mode="json"),
                }
            )
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "--settings",
                str(settings),
                "install",
                str(model_file(version="2.0.0", seed=2)),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert done.returncode == 0, done.stderr
    assert "📧 [ALERTS] Sent 'New models installed - version " in done.stderr
    [subject] = subjects(slow)
    assert INSTALLED_SUBJECT.match(subject)
