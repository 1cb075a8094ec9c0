"""Logging, configured once by the entry point: loguru sinks, stdlib routed in, secrets redacted.

Human-readable lines by default; one JSON object per line with ``json_lines``. Tracebacks never
show local variables (``diagnose=False``), and every configured secret is replaced by ``***``
in every message as a last line of defence: no code path logs a secret on purpose.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

import stamina.instrumentation
from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

HUMAN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"


class _ToLoguru(logging.Handler):
    """Sends stdlib records (aiohttp, asyncio) to loguru at the same level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, f"[{record.name}] {record.getMessage()}")


def _redactor(secrets: Iterable[str]) -> object:
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)

    def patch(record: Record) -> None:
        message = record["message"]
        for secret in hidden:
            if secret in message:
                message = message.replace(secret, "***")
        record["message"] = message

    return patch


def configure_logging(
    *,
    level: str = "INFO",
    json_lines: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Replace all sinks with one on `stream` (stderr by default) and enable this package."""
    logger.remove()
    logger.configure(patcher=_redactor(secrets))  # type: ignore[arg-type]
    logger.add(
        stream or sys.stderr,
        level=level,
        serialize=json_lines,
        format=HUMAN_FORMAT,
        backtrace=False,
        diagnose=False,
        colorize=False,
    )
    logger.enable("app")
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.INFO, force=True)
    # The resilience service logs each retry itself; stamina's own hooks would log it twice.
    stamina.instrumentation.set_on_retry_hooks([])
