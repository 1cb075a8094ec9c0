"""Logging, configured once by the entry point: loguru sinks, stdlib routed in, secrets redacted.

Human-readable lines by default; one JSON object per line with ``json_lines``. Tracebacks never
show local variables (``diagnose=False``), and every configured secret is replaced by ``***``
in everything written as a last line of defence: no code path logs a secret on purpose.

Messages quote text that artifacts and servers wrote (a model's version, a member name, an error
body). Every message is passed through :func:`printable` before it is written, so such text can
neither start a line of its own (a forged ``✅ [MODEL-RELOAD]``) nor drive the terminal (escape
sequences that clear the screen or move the cursor).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

import stamina.instrumentation
from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

HUMAN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"
# C0 controls (newline, ESC, ...), DEL and C1, line and paragraph separators, and the bidi
# controls that reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _UNPRINTABLE.sub(_escape, text)


def _printable_message(record: Record) -> None:
    record["message"] = printable(record["message"])


class _ToLoguru(logging.Handler):
    """Sends stdlib records (aiohttp, asyncio) to loguru at the same level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(exception=record.exc_info).log(level, f"[{record.name}] {record.getMessage()}")


class _RedactingStream:
    """Writes formatted log text with every secret replaced by ``***``.

    Redacting the final text (not just the message) also covers exception text, bound extras
    and the JSON form, where a secret may appear escaped.
    """

    def __init__(self, stream: TextIO, secrets: Iterable[str]) -> None:
        self._stream = stream
        forms = set()
        for secret in secrets:
            if secret:
                forms |= {secret, json.dumps(secret)[1:-1]}
        self._hidden = sorted(forms, key=len, reverse=True)

    def write(self, text: str) -> None:
        for secret in self._hidden:
            if secret in text:
                text = text.replace(secret, "***")
        self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


def configure_logging(
    *,
    level: str = "INFO",
    json_lines: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Replace all sinks with one on `stream` (stderr by default) and enable this package."""
    logger.remove()
    logger.configure(patcher=_printable_message)
    logger.add(
        _RedactingStream(stream or sys.stderr, secrets),
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
