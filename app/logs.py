"""Logging, configured once by the entry point: loguru sinks, stdlib routed in, secrets redacted.

Human-readable lines by default; one flat JSON object per line with ``json_lines``: ``time``,
``level``, ``logger``, ``message`` (without the seed's emoji markers), ``exception`` when there
is one, and every field bound with ``logger.bind`` (slot, version, action, outcome, artifact,
reason, ...) as a top-level key, so that a log pipeline filters on them without parsing text.
Tracebacks never show local variables (``diagnose=False``), and every configured secret is
replaced by ``***`` in everything written as a last line of defence: no code path logs a secret
on purpose.

Messages quote text that artifacts and servers wrote (a model's version, a member name, an error
body). Every message is passed through :func:`printable` before it is written, so such text can
neither start a line of its own (a forged ``✅ [MODEL-RELOAD]``) nor drive the terminal (escape
sequences that clear the screen or move the cursor). In JSON lines every value is escaped by
JSON itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

import stamina.instrumentation
from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

HUMAN_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"
# C0 controls (newline, ESC, ...), DEL and C1, line and paragraph separators, and the bidi
# controls that reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_KEY = "_json_line"  # where the JSON format leaves its line for loguru to write


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _UNPRINTABLE.sub(_escape, text)


def _printable_message(record: Record) -> None:
    record["message"] = printable(record["message"])


def _is_emoji(character: str) -> bool:
    # The seed's markers (✅ ⚠️ ❌ 🌐 🔄 💾 📈 📧): pictographs, and the joiners that style them.
    return character in "\ufe0f\u200d" or (
        ord(character) >= 0x2190 and unicodedata.category(character) == "So"
    )


def without_emoji(message: str) -> str:
    """`message` without emoji, and without the space that followed a leading marker."""
    if message.isascii():
        return message
    return "".join(c for c in message if not _is_emoji(c)).lstrip()


def _json_format(record: Record) -> str:
    """Loguru format function: the record as one flat JSON object (bound fields top-level)."""
    fields: dict[str, Any] = {k: v for k, v in record["extra"].items() if k != _JSON_KEY}
    fields |= {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": without_emoji(record["message"]),
    }
    if record["exception"] is not None:
        kind, value, trace = record["exception"]
        name = kind.__name__ if kind is not None else "Exception"
        fields["exception"] = f"{name}: {value}"
        if trace is not None:  # file and line names only: never local variables
            fields["traceback"] = "".join(traceback.format_exception(kind, value, trace))
    record["extra"][_JSON_KEY] = json.dumps(fields, default=str)
    return "{extra[" + _JSON_KEY + "]}\n"


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
        format=_json_format if json_lines else HUMAN_FORMAT,
        backtrace=False,
        diagnose=False,
        colorize=False,
    )
    logger.enable("app")
    logging.basicConfig(handlers=[_ToLoguru()], level=logging.INFO, force=True)
    # The resilience service logs each retry itself; stamina's own hooks would log it twice.
    stamina.instrumentation.set_on_retry_hooks([])
