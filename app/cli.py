"""The command line: ``python -m app [--smoke] [COMMAND]``: ``run`` (the default), ``install``,
``status``, ``rollback``, ``sync``, ``replay``, ``quarantine [release SHA256]``.

Exit codes: 0 done; 1 refused or failed (the reason on one line, no traceback); 2 bad usage
or configuration; 130 interrupted (Ctrl-C) before a one-shot command finished or before the
host was running. A running host stops on SIGINT as on SIGTERM, and exits 0.

Whatever fails, the user reads one line saying why: an error this package raises on purpose,
any ``OSError`` (a read-only or full disk, a port in use), and as a last resort anything
unexpected, whose traceback is logged at DEBUG level.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from app import commands
from app.brain.runtime import MIB, set_memory_budget
from app.commands import EXIT_FAILED, EXIT_USAGE
from app.containers import Application
from app.errors import AppError, ConfigurationError
from app.logs import configure_logging
from app.process import caused_by_interrupt
from app.settings import DEFAULT_SETTINGS_FILE, Settings, load_settings, settings_file

EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT


def _global_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """``--settings`` and ``--log-json``, accepted before and after the subcommand.

    Under a subcommand their default is SUPPRESS, so that an option given before the
    subcommand is not reset by the subcommand's own (absent) copy of it.
    """
    parser.add_argument(
        "--settings",
        default=default,
        help="settings file (default: $APP_SETTINGS or ./settings.yaml)",
    )
    parser.add_argument(
        "--log-json",
        action="store_true",
        default=False if default is None else default,
        help="log JSON lines instead of text",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Keep a trading bot on its newest good ONNX model.",
    )
    _global_options(parser, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="load the model, decide once, check settings, exit"
    )
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.add_parser(
        "run", parents=[common], help="run the bot host until SIGINT/SIGTERM (the default)"
    )
    install = subcommands.add_parser(
        "install", parents=[common], help="validate and hot-swap a model file"
    )
    install.add_argument("path", type=Path)
    install.add_argument("--slot", help="slot to install into (default: the decision slot)")
    status = subcommands.add_parser(
        "status", parents=[common], help="active models, backups, last sync"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    rollback = subcommands.add_parser(
        "rollback", parents=[common], help="restore a backup as the active model"
    )
    rollback.add_argument("slot", nargs="?", help="slot (default: the decision slot)")
    rollback.add_argument("--to", dest="backup", help="backup file name (default: the previous)")
    for verb, says in (
        ("promote", "make the running host's candidate (shadow or canary) the champion now"),
        ("reject", "roll back and quarantine the running host's candidate (or champion)"),
    ):
        control = subcommands.add_parser(verb, parents=[common], help=says)
        control.add_argument("slot", nargs="?", help="slot (default: the decision slot)")
    sync = subcommands.add_parser(
        "sync", parents=[common], help="one synchronization cycle now, then exit"
    )
    sync.add_argument("--force", action="store_true", help="ignore the minimum interval")
    sync.add_argument("--json", action="store_true", help="print one JSON object")
    quarantine = subcommands.add_parser(
        "quarantine", parents=[common], help="the quarantined models; `release SHA256` one"
    )
    quarantine.add_argument("--json", action="store_true", help="print one JSON object")
    actions = quarantine.add_subparsers(dest="action", metavar="ACTION")
    release = actions.add_parser(
        "release", parents=[common], help="let a quarantined model be installed again"
    )
    release.add_argument("sha256", help="its SHA-256, or a prefix of at least 8 hex digits")
    replay = subcommands.add_parser(
        "replay", help="the serving model and a candidate over the same bars, side by side"
    )
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--bars", type=Path, metavar="CSV", help="OHLCV bars to replay")
    source.add_argument(
        "--journal",
        nargs="?",
        const="",
        metavar="PATH",
        help="replay the features recorded in the decision journal (default: the host's)",
    )
    replay.add_argument("--candidate", type=Path, metavar="MODEL", help="an .onnx to compare")
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.add_argument("--plot", type=Path, metavar="PNG", help="write both equity curves")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before or between the steps below: quietly
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings)
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    json_lines = args.log_json or settings.logging.json_lines
    configure_logging(
        level=settings.logging.level, json_lines=json_lines, secrets=_secrets(settings)
    )
    if settings_file(args.settings) is None:
        logger.warning(
            f"⚠️ [SETTINGS] Settings file {Path.cwd() / DEFAULT_SETTINGS_FILE} not found "
            "(and no --settings or APP_SETTINGS): using the defaults"
        )
    command = "smoke" if args.smoke else (args.command or "run")
    # This process's sessions together may allocate at most memory.limit_mb while they run.
    set_memory_budget(int(settings.memory.limit_mb * MIB))
    try:
        return asyncio.run(_dispatch(command, args, settings))
    except AppError as error:
        return _failed(str(error), logged=json_lines)
    except OSError as error:
        return _failed(describe_os_error(error), logged=json_lines)
    except Exception as error:  # a bug: still one line for the user, the traceback in the log
        if caused_by_interrupt(error):
            return EXIT_INTERRUPTED
        logger.opt(exception=error).debug("unexpected error")
        return _failed(
            f"unexpected {type(error).__name__}: {error} "
            "(a bug; LOGGING__LEVEL=DEBUG logs its traceback)",
            logged=json_lines,
        )


def describe_os_error(error: OSError) -> str:
    """An ``OSError`` as coreutils say it: ``path: what went wrong``."""
    what = error.strerror or str(error)
    return f"{error.filename}: {what}" if error.filename else what


def _failed(reason: str, *, logged: bool) -> int:
    """One line for the user; with JSON logs, also a JSON line for whatever reads them (a
    text log line would only say the same thing twice)."""
    reason = " ".join(reason.split())
    if logged:
        logger.bind(outcome="failed", reason=reason).error(f"❌ {reason}")
    print(f"error: {reason}", file=sys.stderr)
    return EXIT_FAILED


def _secrets(settings: Settings) -> list[str]:
    return [
        settings.github.token.get_secret_value(),
        settings.ops.webhook_secret.get_secret_value(),
        settings.ops.admin_token.get_secret_value(),
        settings.alerts.password.get_secret_value(),
    ]


async def _dispatch(command: str, args: argparse.Namespace, settings: Settings) -> int:
    container = Application(config=settings)
    handlers: dict[str, Any] = {
        "run": commands.run,
        "smoke": commands.smoke,
        "install": commands.install,
        "status": commands.status,
        "rollback": commands.rollback,
        "promote": commands.promote,
        "reject": commands.reject,
        "sync": commands.sync,
        "quarantine": commands.quarantine,
        "replay": commands.replay,
    }
    result: int = await handlers[command](container, args)
    return result
