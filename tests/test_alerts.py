"""EmailAlerts against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from loguru import logger
from pydantic import SecretStr

from app.services.alerts import EmailAlerts, installed_alert, refused_alert, version_stamp
from app.settings import AlertSettings
from tests.smtp_server import SENDER, Inbox, alert_settings, free_port, serving

PASSWORD = "hunter2-smtp-secret"
RECIPIENTS = ("ops@example.com", "risk@example.com")
SERVER_STALL_SECONDS = 3.0
FAST_RETURN_SECONDS = 0.5


def accept_only(user: str, password: str) -> Any:
    """An aiosmtpd authenticator that knows one account."""

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == (
            user.encode(),
            password.encode(),
        )
        # handled=False: aiosmtpd itself answers 535 to a failed login.
        return AuthResult(success=ok, handled=False, auth_data=user.encode() if ok else None)

    return authenticate


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    logger.enable("app")
    sink = logger.add(caplog.handler, format="{message}", level=0)
    yield caplog
    logger.remove(sink)
    logger.disable("app")


def settings(port: int, **changes: Any) -> AlertSettings:
    """Alerts to the server on `port`, for both `RECIPIENTS`."""
    return alert_settings(port, **{"recipients": RECIPIENTS, **changes})


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    # Only ours: aiosmtpd logs its own complaints through the same handler.
    ours = (r for r in caplog.records if r.name.startswith("app."))
    return [r.getMessage() for r in ours if r.levelno == logging.WARNING]


def all_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# --- what the messages say -------------------------------------------------------------------


def test_version_stamp_is_utc_like_backup_names() -> None:
    new_york = timezone(timedelta(hours=-5))
    assert version_stamp(datetime(2024, 3, 1, 7, 30, 5, tzinfo=new_york)) == "20240301_123005"
    naive = datetime(2024, 3, 1, 12, 30, 5)
    assert version_stamp(naive) == "20240301_123005"


def test_installed_alert_uses_the_seeds_subject_and_lists_every_slot() -> None:
    alert = installed_alert(
        {"unified_brain": "2.1.0", "rl_agent": "0.9"},
        datetime(2024, 3, 1, 12, 30, 5, tzinfo=UTC),
        details="run 123 on main",
    )
    assert alert.subject == "New models installed - version 20240301_123005"
    assert "unified_brain: 2.1.0" in alert.body
    assert "rl_agent: 0.9" in alert.body
    assert "run 123 on main" in alert.body


def test_refused_alert_subject_stays_one_line_whatever_the_source_says() -> None:
    alert = refused_alert("checksum mismatch", "artifact models\r\nBcc: evil@example.com")
    assert "\n" not in alert.subject
    assert "\r" not in alert.subject
    assert "checksum mismatch" in alert.body


# --- sending ---------------------------------------------------------------------------------


async def test_installed_alert_reaches_every_recipient(smtp: Controller, inbox: Inbox) -> None:
    alerts = EmailAlerts(settings(smtp.port))

    alerts.notify_installed({"unified_brain": "2.1.0"}, datetime(2024, 3, 1, 12, 30, 5, tzinfo=UTC))
    await alerts.aclose()

    [delivery] = inbox.deliveries
    assert delivery.message["Subject"] == "New models installed - version 20240301_123005"
    assert delivery.sender == SENDER
    assert delivery.recipients == list(RECIPIENTS)
    assert delivery.message["To"] == ", ".join(RECIPIENTS)
    assert "unified_brain: 2.1.0" in delivery.message.get_content()
    assert delivery.login is None  # no username configured: no AUTH


async def test_refused_and_rollback_alerts_are_sent(smtp: Controller, inbox: Inbox) -> None:
    alerts = EmailAlerts(settings(smtp.port))

    alerts.notify_refused("declared sha256 does not match", "artifact 42 (run 7)")
    alerts.notify_rollback("unified_brain", "unified_brain_20240301_123005.onnx", "2.0.0")
    await alerts.aclose()

    # A subject over 78 characters arrives folded; a mail client drops the fold's leading space.
    subjects = sorted(str(d.message["Subject"]).strip() for d in inbox.deliveries)
    assert subjects == [
        "Model rolled back - unified_brain to unified_brain_20240301_123005.onnx",
        "Model update refused - artifact 42 (run 7)",
    ]


async def test_logs_in_with_the_configured_credentials(inbox: Inbox) -> None:
    with serving(
        inbox, auth_require_tls=False, authenticator=accept_only("alerts-user", PASSWORD)
    ) as controller:
        alerts = EmailAlerts(
            settings(controller.port, username="alerts-user", password=SecretStr(PASSWORD))
        )

        alerts.notify_rollback("unified_brain", "backup.onnx", "1.0")
        await alerts.aclose()

    [delivery] = inbox.deliveries
    assert delivery.login == "alerts-user"


async def test_refused_login_is_logged_without_the_password(
    inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(
        inbox, auth_require_tls=False, authenticator=accept_only("alerts-user", "other")
    ) as controller:
        alerts = EmailAlerts(
            settings(controller.port, username="alerts-user", password=SecretStr(PASSWORD))
        )

        alerts.notify_rollback("unified_brain", "backup.onnx", "1.0")
        await alerts.aclose()

    assert inbox.deliveries == []
    [warning] = warnings_in(caplog)
    assert warning.startswith("⚠️ [ALERTS] Could not send alert: SMTPAuthenticationError")
    assert PASSWORD not in all_logs(caplog)


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_encrypted_security_never_falls_back_to_clear_text(
    security: str, smtp: Controller, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = EmailAlerts(settings(smtp.port, security=security, timeout_seconds=2))

    alerts.notify_refused("bad", "artifact 1")
    await alerts.aclose()

    assert inbox.deliveries == []
    assert len(warnings_in(caplog)) == 1


# --- never in the caller's way ---------------------------------------------------------------


async def test_dead_server_does_not_delay_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    alerts = EmailAlerts(
        settings(free_port(), username="alerts-user", password=SecretStr(PASSWORD))
    )

    started = time.perf_counter()
    alerts.notify_installed({"unified_brain": "2.1.0"}, datetime.now(UTC))
    assert time.perf_counter() - started < FAST_RETURN_SECONDS

    await alerts.aclose()
    [warning] = warnings_in(caplog)
    assert warning.startswith("⚠️ [ALERTS] Could not send alert: ")
    assert "127.0.0.1" in warning
    assert PASSWORD not in all_logs(caplog)


async def test_slow_server_is_abandoned_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    stalling = Inbox(stall_seconds=SERVER_STALL_SECONDS)
    with serving(stalling) as controller:
        alerts = EmailAlerts(
            settings(controller.port, timeout_seconds=0.3, password=SecretStr(PASSWORD))
        )

        started = time.perf_counter()
        alerts.notify_installed({"unified_brain": "2.1.0"}, datetime.now(UTC))
        assert time.perf_counter() - started < FAST_RETURN_SECONDS

        while not warnings_in(caplog) and time.perf_counter() - started < SERVER_STALL_SECONDS:
            await asyncio.sleep(0.02)
        assert time.perf_counter() - started < SERVER_STALL_SECONDS
        [warning] = warnings_in(caplog)
        assert "did not finish within 0.3 s" in warning
        assert PASSWORD not in all_logs(caplog)
        await alerts.aclose()


async def test_aclose_is_bounded_by_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    stalling = Inbox(stall_seconds=SERVER_STALL_SECONDS)
    with serving(stalling) as controller:
        alerts = EmailAlerts(settings(controller.port, timeout_seconds=0.3))
        alerts.notify_refused("bad", "artifact 1")

        started = time.perf_counter()
        await alerts.aclose()
        assert time.perf_counter() - started < 1.5

    assert stalling.deliveries == []
    [warning] = warnings_in(caplog)
    assert warning.startswith("⚠️ [ALERTS] Could not send alert: ")


@pytest.mark.parametrize("changes", [{"enabled": False}, {"recipients": ()}])
async def test_disabled_or_nobody_to_tell_sends_nothing(
    changes: dict[str, Any], smtp: Controller, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = EmailAlerts(settings(smtp.port, **changes))

    alerts.notify_installed({"unified_brain": "2.1.0"}, datetime.now(UTC))
    alerts.notify_refused("bad", "artifact 1")
    alerts.notify_rollback("unified_brain", "backup.onnx", "1.0")
    await alerts.aclose()

    assert not alerts.enabled
    assert inbox.deliveries == []
    assert warnings_in(caplog) == []


def test_without_an_event_loop_the_alert_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alerts = EmailAlerts(settings(free_port()))

    alerts.notify_refused("bad", "artifact 1")

    [warning] = warnings_in(caplog)
    assert "no running event loop" in warning


async def test_missing_sender_is_named_in_the_log(
    smtp: Controller, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = EmailAlerts(settings(smtp.port, sender=""))

    alerts.notify_refused("bad", "artifact 1")
    await alerts.aclose()

    assert inbox.deliveries == []
    [warning] = warnings_in(caplog)
    assert "alerts.sender" in warning


async def test_alerts_after_aclose_are_dropped_with_a_warning(
    smtp: Controller, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = EmailAlerts(settings(smtp.port))
    await alerts.aclose()

    alerts.notify_refused("bad", "artifact 1")
    await asyncio.sleep(0.2)

    assert inbox.deliveries == []
    [warning] = warnings_in(caplog)
    assert "alerts are closed" in warning
