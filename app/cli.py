"""The command line: ``python -m app [--smoke] [run|install|status|rollback|sync|replay]``.

Exit codes: 0 done; 1 refused or failed (the reason on one line, no traceback); 2 bad usage
or configuration.
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
from app.commands import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from app.containers import Application
from app.errors import AppError, ConfigurationError
from app.logs import configure_logging
from app.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Keep a trading bot on its newest good ONNX model.",
    )
    parser.add_argument(
        "--settings", help="settings file (default: $APP_SETTINGS or ./settings.yaml)"
    )
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    parser.add_argument(
        "--smoke", action="store_true", help="load the model, decide once, check settings, exit"
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.add_parser("run", help="run the bot host until SIGINT/SIGTERM (the default)")
    install = subcommands.add_parser("install", help="validate and hot-swap a model file")
    install.add_argument("path", type=Path)
    install.add_argument("--slot", help="slot to install into (default: the decision slot)")
    status = subcommands.add_parser("status", help="active models, backups, last sync")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    rollback = subcommands.add_parser("rollback", help="restore a backup as the active model")
    rollback.add_argument("slot", nargs="?", help="slot (default: the decision slot)")
    rollback.add_argument("--to", dest="backup", help="backup file name (default: the previous)")
    sync = subcommands.add_parser("sync", help="one synchronization cycle now, then exit")
    sync.add_argument("--force", action="store_true", help="ignore the minimum interval")
    sync.add_argument("--json", action="store_true", help="print one JSON object")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.settings)
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(
        level=settings.logging.level,
        json_lines=args.log_json or settings.logging.json_lines,
        secrets=_secrets(settings),
    )
    command = "smoke" if args.smoke else (args.command or "run")
    # This process's sessions together may allocate at most memory.limit_mb while they run.
    set_memory_budget(int(settings.memory.limit_mb * MIB))
    try:
        return asyncio.run(_dispatch(command, args, settings))
    except KeyboardInterrupt:
        return EXIT_OK
    except AppError as error:
        logger.error(f"❌ {error}")
        print(f"error: {error}", file=sys.stderr)
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
        "sync": commands.sync,
        "replay": commands.replay,
    }
    result: int = await handlers[command](container, args)
    return result
