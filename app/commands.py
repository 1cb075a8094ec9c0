"""What each command does, given the application container."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.models import Candidate, SwapResult
from app.containers import Application
from app.errors import AppError
from app.host import BotHost
from app.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def smoke(container: Application, _args: argparse.Namespace) -> int:
    """Load the brain, make one decision, exit; no network."""
    brain: TradingBrain = container.brain()
    try:
        await brain.start()
        decision = brain.decide([0.0] * len(brain.settings.features))
    except AppError as error:
        print(f"smoke test failed: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    versions = ", ".join(f"{slot}={v}" for slot, v in decision.versions.items())
    print(
        f"smoke test passed: {decision.action} (confidence {decision.confidence:.2f}) by {versions}"
    )
    return EXIT_OK


async def run(container: Application, _args: argparse.Namespace) -> int:
    """The long-running host."""
    settings: Settings = container.config()
    brain: TradingBrain = container.brain()
    await brain.start()
    host = BotHost(
        brain,
        tick_seconds=settings.brain.tick_seconds,
        watch_seconds=settings.models.watch_seconds,
    )
    try:
        await host.run()
    finally:
        await _shutdown(container)
    return EXIT_OK


async def _shutdown(container: Application) -> None:
    result = container.shutdown_resources()
    if result is not None:
        await result


def _report(result: SwapResult, verb: str) -> int:
    if not result.ok:
        print(f"refused: {_one_line(result.reason)}", file=sys.stderr)
        return EXIT_FAILED
    if not result.installed:
        print("unchanged: that model is already serving")
        return EXIT_OK
    for slot, model in result.installed.items():
        backup = result.backups.get(slot)
        kept = f"; previous model backed up to {backup}" if backup else ""
        print(f"{verb} {slot} version {model.version} (sha256 {model.sha256[:12]}){kept}")
    return EXIT_OK


async def install(container: Application, args: argparse.Namespace) -> int:
    """Validate a model file and hot-swap it in; a running host picks it up from disk."""
    brain: TradingBrain = container.brain()
    await brain.start()
    slot = args.slot or brain.settings.decision_slot
    if slot not in brain.settings.slots:
        print(f"refused: unknown slot {slot!r}", file=sys.stderr)
        return EXIT_FAILED
    result = await brain.swap_in([Candidate(slot, args.path)], source="cli")
    return _report(result, "installed")


async def rollback(container: Application, args: argparse.Namespace) -> int:
    """Restore a backup through the validated install path."""
    brain: TradingBrain = container.brain()
    await brain.start()
    result = await brain.rollback(args.slot, args.backup)
    return _report(result, "rolled back")


def status_report(brain: TradingBrain) -> dict[str, Any]:
    """Active models and their backups, as plain data."""
    snapshot = brain.snapshot
    return {
        "models": {
            slot: {
                "path": str(model.path),
                "sha256": model.sha256,
                "version": model.version,
                "size_bytes": model.size_bytes,
                "backups": [path.name for path in brain.backups(slot)],
            }
            for slot, model in snapshot.models.items()
        },
    }


async def status(container: Application, args: argparse.Namespace) -> int:
    brain: TradingBrain = container.brain()
    await brain.start(recover=False)
    report = status_report(brain)
    if args.json:
        print_json(report)
        return EXIT_OK
    for slot, info in report["models"].items():
        print(f"{slot}: version {info['version']}  sha256 {info['sha256'][:12]}  {info['path']}")
        backups = info["backups"]
        print(f"  backups ({len(backups)}): {', '.join(backups) or 'none'}")
    logger.debug("status printed")
    return EXIT_OK
