"""Email alerts about model changes, sent in the background so a mail server never holds up a sync.

The ``notify_*`` methods return at once and never raise: each schedules one send on the running
event loop, bounded by ``alerts.timeout_seconds``. A failed send is one warning line
(``⚠️ [ALERTS] Could not send alert: ...``) and nothing more; the password never appears in it.
With ``alerts.enabled`` false or no recipients, every method is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib
from loguru import logger

from app.errors import ConfigurationError
from app.settings import AlertSettings

VERSION_STAMP_FORMAT = "%Y%m%d_%H%M%S"  # the seed's yyyyMMdd_HHmmss, as in backup names
_SUBJECT_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Alert:
    """What an alert says: a one-line subject and a plain-text body."""

    subject: str
    body: str


def version_stamp(moment: datetime) -> str:
    """``moment`` as ``yyyyMMdd_HHmmss`` in UTC; a naive datetime is taken to be UTC already."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime(VERSION_STAMP_FORMAT)


def _one_line(text: str) -> str:
    # Reasons and sources can come from GitHub (artifact names); a line break in a header
    # would make the message unbuildable, and a long subject is unreadable.
    flat = " ".join(text.split())
    return flat if len(flat) <= _SUBJECT_MAX_CHARS else flat[: _SUBJECT_MAX_CHARS - 1] + "…"


def installed_alert(versions: Mapping[str, str], timestamp: datetime, details: str = "") -> Alert:
    """The alert for newly installed models, with the seed's subject template."""
    stamp = version_stamp(timestamp)
    lines = [
        "New models were installed and are now serving decisions.",
        "",
        f"Installed at: {stamp} UTC",
        "Models:",
        *(f"  {slot}: {version}" for slot, version in sorted(versions.items())),
    ]
    if details:
        lines += ["", details]
    return Alert(subject=f"New models installed - version {stamp}", body="\n".join(lines))


def refused_alert(reason: str, source: str) -> Alert:
    """The alert for a model update that was refused; the bot keeps its current models."""
    body = (
        f"A model update from {source} was refused; the bot keeps trading on its current models.\n"
        f"\nReason: {reason}"
    )
    return Alert(subject=_one_line(f"Model update refused - {source}"), body=body)


def rollback_alert(slot: str, backup: str, version: str) -> Alert:
    """The alert for a slot restored from one of its backups."""
    body = f"Slot {slot} was rolled back to backup {backup}.\n\nNow serving version: {version}"
    return Alert(subject=_one_line(f"Model rolled back - {slot} to {backup}"), body=body)


def stage_alert(headline: str, lines: Sequence[str]) -> Alert:
    """The alert for a change of a model's stage (promoted, rolled back, canary started)."""
    return Alert(subject=_one_line(headline), body="\n".join([f"{headline}.", "", *lines]))


class EmailAlerts:
    """Sends alert emails over SMTP without ever blocking or failing its caller."""

    def __init__(self, settings: AlertSettings) -> None:
        self._settings = settings
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def enabled(self) -> bool:
        """True when alerts are switched on and someone would receive them."""
        return self._settings.enabled and bool(self._settings.recipients)

    def notify_installed(
        self, versions: Mapping[str, str], timestamp: datetime, details: str = ""
    ) -> None:
        """Tell the recipients which model versions were just installed."""
        if self.enabled:
            self._schedule(installed_alert(versions, timestamp, details))

    def notify_refused(self, reason: str, source: str) -> None:
        """Tell the recipients a model update from ``source`` was refused, and why."""
        if self.enabled:
            self._schedule(refused_alert(reason, source))

    def notify_rollback(self, slot: str, backup: str, version: str) -> None:
        """Tell the recipients ``slot`` was restored from ``backup``."""
        if self.enabled:
            self._schedule(rollback_alert(slot, backup, version))

    def notify_stage(self, headline: str, lines: Sequence[str]) -> None:
        """Tell the recipients a model changed stage: which model, why, and the figures."""
        if self.enabled:
            self._schedule(stage_alert(headline, lines))

    async def aclose(self) -> None:
        """Wait up to ``timeout_seconds`` for alerts still being sent, then cancel the rest."""
        self._closed = True
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=self._settings.timeout_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
            self._warn(f"shutting down with {len(late)} alert(s) still unsent")

    def _schedule(self, alert: Alert) -> None:
        if self._closed:
            self._warn(f"alerts are closed ({alert.subject!r})")
            return
        try:
            message = self._compose(alert)
            loop = asyncio.get_running_loop()
        except (ConfigurationError, ValueError, RuntimeError) as error:
            self._warn(f"{error} ({alert.subject!r})")
            return
        task = loop.create_task(self._deliver(message), name=f"alert: {alert.subject}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _compose(self, alert: Alert) -> EmailMessage:
        sender = self._settings.sender or self._settings.username
        if not sender:
            raise ConfigurationError("alerts.sender (or alerts.username) is not set")
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(self._settings.recipients)
        message["Subject"] = alert.subject
        message.set_content(alert.body)
        return message

    async def _deliver(self, message: EmailMessage) -> None:
        settings = self._settings
        subject = str(message["Subject"])
        where = f"{settings.smtp_host}:{settings.smtp_port}"
        login = bool(settings.username)
        try:
            async with asyncio.timeout(settings.timeout_seconds):
                await aiosmtplib.send(
                    message,
                    hostname=settings.smtp_host,
                    port=settings.smtp_port,
                    use_tls=settings.security == "tls",
                    start_tls=settings.security == "starttls",
                    username=settings.username if login else None,
                    password=settings.password.get_secret_value() if login else None,
                    timeout=settings.timeout_seconds,
                )
        except TimeoutError:
            self._warn(f"{where} did not finish within {settings.timeout_seconds} s ({subject!r})")
        except Exception as error:
            self._warn(f"{type(error).__name__} from {where}: {error} ({subject!r})")
        else:
            logger.info(f"📧 [ALERTS] Sent {subject!r} to {len(settings.recipients)} recipient(s)")

    def _warn(self, reason: str) -> None:
        password = self._settings.password.get_secret_value()
        if password:
            reason = reason.replace(password, "**********")
        logger.warning(f"⚠️ [ALERTS] Could not send alert: {reason}")
