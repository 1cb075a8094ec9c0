"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, and alert settings
that send to it. The ``inbox`` and ``smtp`` fixtures in ``tests/conftest.py`` serve one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from app.settings import AlertSettings

SENDER = "bot@example.com"


@dataclass
class Delivery:
    """One message as the server received it, with who logged in to send it."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None


@dataclass
class Inbox:
    """An aiosmtpd handler that keeps every message it accepts, optionally after a stall."""

    stall_seconds: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        login = session.auth_data.decode() if session.authenticated else None
        self.deliveries.append(
            Delivery(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, _class=EmailMessage, policy=policy.default),
                login,
            )
        )
        return "250 OK"


def free_port() -> int:
    """A loopback port nothing listens on (at the moment it is asked for)."""
    # aiosmtpd's Controller connects to its own port on start, so it cannot be given port 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(inbox: Inbox, **smtp_options: Any) -> Iterator[Controller]:
    """An SMTP server on 127.0.0.1 handing what it accepts to `inbox`, for the block's length."""
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **smtp_options)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def alert_settings(port: int, **changes: Any) -> AlertSettings:
    """Enabled alerts from `SENDER`, in clear text to the server on `port`; `changes` overwrite."""
    values: dict[str, Any] = {
        "enabled": True,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "sender": SENDER,
        "recipients": ("ops@example.com",),
        "timeout_seconds": 5,
    } | changes
    return AlertSettings(**values)
