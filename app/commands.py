"""What each command does, given the application container."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import Collection
from typing import Any

from app.brain.brain import TradingBrain
from app.brain.models import Candidate, SwapResult
from app.containers import Application, resolve
from app.control import ask_host
from app.errors import AppError
from app.host import STOP_GRACE_SECONDS, BotHost
from app.install.installer import ModelInstaller
from app.install.layout import ModelsLayout
from app.install.lock import hold_host
from app.install.quarantine import Quarantine
from app.install.records import Origin
from app.lifecycle.controller import ModelLifecycle
from app.lifecycle.record import read_record
from app.lifecycle.report import describe
from app.ops import OpsServer
from app.process import settle_heap
from app.services.alerts import EmailAlerts
from app.services.inbox import LocalInbox
from app.services.installer import ArtifactInstaller
from app.services.outcome import CycleOutcome
from app.services.progress import download_progress
from app.services.state import StateStore
from app.services.sync import CloudModelSynchronizationService
from app.services.webhook import WebhookDispatcher
from app.settings import Settings
from app.status import status_report
from app.trading.bars import MarketDataError
from app.trading.features import WARMUP_BARS, FeatureEngine, feature_indices
from app.trading.figures import version_figures
from app.trading.journal import DecisionJournal
from app.trading.market import bar_feed
from app.trading.replay import table
from app.trading.replaying import replay_models

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _started(
    container: Application,
    *,
    recover: bool = True,
    strict: bool = False,
    repairable: bool = False,
) -> ModelInstaller:
    """The installer with its brain serving: recovered first unless `recover` is False.

    `repairable`: a slot nothing can serve leaves the brain unloaded instead of failing
    (``install`` and ``rollback`` can then repair it, ``status`` reports it).
    """
    models: ModelInstaller | None = container.models()
    assert models is not None  # the standalone host always has a brain
    await models.start(recover=recover, strict=strict, repairable=repairable)
    return models


async def _started_brain(container: Application, *, recover: bool = True) -> TradingBrain:
    return (await _started(container, recover=recover)).brain


async def smoke(container: Application, _args: argparse.Namespace) -> int:
    """Load the brain, decide once on the market's first feature row, exit; no network, and no
    write to the models."""
    settings: Settings = container.config()
    try:
        brain = await _started_brain(container, recover=False)
        decision = brain.decide(_first_feature_row(settings))
    except AppError as error:
        print(f"smoke test failed: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    problems = [m.fallback_reason for m in brain.snapshot.models.values() if m.fallback_reason]
    if problems:
        print(f"smoke test failed: {_one_line(problems[0])}", file=sys.stderr)
        return EXIT_FAILED
    versions = ", ".join(f"{slot}={v}" for slot, v in decision.versions.items())
    print(
        f"smoke test passed: {decision.action} (confidence {decision.confidence:.2f}) by {versions}"
    )
    return EXIT_OK


def _first_feature_row(settings: Settings) -> list[float]:
    """The first feature row of the configured market (all zeros when not trading): proves the
    feature list is defined and the bars can be read."""
    if not settings.trading.enabled:
        return [0.0] * len(settings.brain.features)
    columns = feature_indices(settings.brain.features)
    market = settings.market
    feed = bar_feed(
        market.source, csv_path=market.csv_path, seed=market.seed, bar_seconds=market.bar_seconds
    )
    engine = FeatureEngine()
    for bar in itertools.islice(feed.bars, WARMUP_BARS):
        row = engine.update(bar)
        if row is not None:
            return [row[i] for i in columns]
    raise MarketDataError(f"{feed.name} has fewer than {WARMUP_BARS} bars: too few to decide")


async def run(container: Application, _args: argparse.Namespace) -> int:
    """The long-running host: decisions, model watch, cloud sync, inbox, ops server."""
    settings: Settings = container.config()
    host_lock = hold_host(settings.models_dir)  # one host per models directory, until it stops
    try:
        await _start_resources(container)
        models = await _started(container, strict=True)
        lifecycle: ModelLifecycle | None = container.lifecycle()
        if lifecycle is not None:
            await lifecycle.start()  # before the first bar: a persisted canary resumes
        host = BotHost(
            models, watch_seconds=settings.models.watch_seconds, trading=container.trading()
        )
        sync: CloudModelSynchronizationService = await resolve(container.core.sync)
        host.add_job("cloud-sync", lambda: sync.run_forever(host.sleep))
        if settings.cloud_sync.inbox_enabled:
            inbox: LocalInbox = await resolve(container.core.inbox)
            host.add_job("inbox", lambda: inbox.run_forever(host.sleep))
        ops: OpsServer | None = None
        if settings.ops.enabled:
            webhooks: WebhookDispatcher = await resolve(container.core.webhooks)
            host.add_job("webhooks", lambda: webhooks.run_forever(host.stopping))
            ops = await resolve(container.ops)
            await ops.start()
        settle_heap()  # everything is loaded: keep start-up objects out of GC passes
        try:
            await host.run()
        finally:
            if lifecycle is not None:  # a rollback the judge started finishes first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lifecycle.stop(), STOP_GRACE_SECONDS)
            if ops is not None:
                await ops.stop()
    finally:
        await _shutdown(container)
        host_lock.release()
    return EXIT_OK


async def _start_resources(container: Application) -> None:
    result = container.init_resources()
    if result is not None:
        await result


async def _shutdown(container: Application) -> None:
    alerts: EmailAlerts = container.alerts()
    await alerts.aclose()  # an alert being sent is given its time, bounded by its timeout
    journal: DecisionJournal | None = container.journal()
    if journal is not None:
        await asyncio.to_thread(journal.close)  # what is pending is written first
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


def _unknown_slot(slots: Collection[str], slot: str) -> str | None:
    if slot in slots:
        return None
    return f"unknown slot {slot!r} (slots: {', '.join(sorted(slots))})"


async def install(container: Application, args: argparse.Namespace) -> int:
    """Validate a model file and hot-swap it in; a running host picks it up from disk."""
    models = await _started(container, repairable=True)
    slot = args.slot or models.brain.settings.decision_slot
    if (unknown := _unknown_slot(models.brain.settings.slots, slot)) is not None:
        print(f"refused: {unknown}", file=sys.stderr)
        return EXIT_FAILED
    origin = Origin(source="cli", artifact_name=args.path.name)
    try:
        result = await models.swap_in([Candidate(slot, args.path)], origin=origin)
    finally:
        await _shutdown(container)  # lets the install alert go out
    code = _report(result, "installed")
    settings: Settings = container.config()
    if result.installed and settings.judges_models and slot == settings.brain.decision_slot:
        print(
            "  a running host trades it only once its canary passes "
            "(`python -m app status` shows the stage)"
        )
    return code


async def rollback(container: Application, args: argparse.Namespace) -> int:
    """Restore a backup through the validated install path."""
    settings: Settings = container.config()
    if args.slot is not None and (unknown := _unknown_slot(settings.brain.slots, args.slot)):
        print(f"refused: {unknown}", file=sys.stderr)
        return EXIT_FAILED
    await _started(container, repairable=True)
    installer: ArtifactInstaller = container.core.installer()
    try:
        result = await installer.roll_back(args.slot, args.backup)
    finally:
        await _shutdown(container)  # lets the rollback alert go out
    return _report(result, "rolled back")


async def sync(container: Application, args: argparse.Namespace) -> int:
    """One synchronization cycle now. Exit 0 when it completed, 1 when it failed."""
    try:
        await _start_resources(container)
        brain = await _started_brain(container)
        service: CloudModelSynchronizationService = await resolve(container.core.sync)
        if sys.stderr.isatty() and not args.json:
            service.progress = lambda artifact: download_progress(artifact, sys.stderr)
        report = await service.synchronize_models(force=args.force)
    finally:
        await _shutdown(container)
    data = report.to_json()
    data["active"] = {slot: m.version for slot, m in brain.snapshot.models.items()}
    if args.json:
        print_json(data)
    else:
        print(f"{report.outcome}: {_one_line(report.reason)}")
        if report.artifact:
            artifact = report.artifact
            print(
                f"  artifact {artifact['name']} (id {artifact['id']}) from run {artifact['run_id']}"
            )
        print("  active: " + ", ".join(f"{s}={v}" for s, v in data["active"].items()))
    return EXIT_FAILED if report.outcome is CycleOutcome.FAILED else EXIT_OK


async def quarantine(container: Application, args: argparse.Namespace) -> int:
    """List the quarantined models, or release one. The file is the truth: no brain is started,
    and only a release writes."""
    settings: Settings = container.config()
    store = Quarantine(ModelsLayout(settings.models_dir))
    if args.action == "release":
        released = await asyncio.to_thread(store.release, args.sha256)
        if released is None:
            given = args.sha256.strip().lower()
            print(f"error: no quarantined model's SHA-256 starts with {given}", file=sys.stderr)
            return EXIT_FAILED
        print(
            f"released {released.sha256[:12]} ({released.slot} version {released.version}, "
            f"quarantined since {released.since}: {released.why})"
        )
        return EXIT_OK
    entries = await asyncio.to_thread(store.entries)
    if args.json:
        print_json({"quarantine": [entry.model_dump(mode="json") for entry in entries]})
        return EXIT_OK
    if not entries:
        print("no model is quarantined")
    for entry in entries:
        print(f"{entry.sha256[:12]}  {entry.slot}  {entry.version}  {entry.since}  {entry.why}")
    return EXIT_OK


def _describe_origin(provenance: dict[str, Any]) -> str:
    """The known facts of a provenance record, in words (unknown ones left out)."""
    parts = [
        f"{label} {provenance[key]}"
        for label, key in (
            ("run", "run_id"),
            ("attempt", "run_attempt"),
            ("artifact", "artifact_name"),
            ("id", "artifact_id"),
            ("commit", "head_sha"),
            ("branch", "branch"),
        )
        if provenance.get(key) is not None
    ]
    return ", ".join([*parts, f"installed {provenance['installed_at']}"])


async def replay(container: Application, args: argparse.Namespace) -> int:
    """The serving model and a candidate over the same bars: a table, JSON, or a picture."""
    settings: Settings = container.config()
    try:
        brain = await _started_brain(container, recover=False)
        run = await replay_models(
            brain, settings, bars=args.bars, journal=args.journal, candidate=args.candidate
        )
        if args.plot is not None:
            from app.trading.plot import plot_equity  # noqa: PLC0415 - matplotlib only if asked

            await asyncio.to_thread(plot_equity, run.report, args.plot)
    except AppError as error:
        print(f"replay failed: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print_json(run.report.to_json())
    else:
        print(table(run.report))
        if args.plot is not None:
            print(f"equity curves written to {args.plot}")
    return EXIT_OK


async def _trading_figures(container: Application) -> dict[str, Any]:
    """Per version: decisions, trades, win rate, returns, drawdown, Sharpe over the journal."""
    journal: DecisionJournal | None = container.journal()
    if journal is None:
        return {"journal": None, "versions": {}}
    figures = await asyncio.to_thread(version_figures, journal)
    return {
        "journal": str(journal.path),
        "versions": {version: f.to_json() for version, f in figures.items()},
    }


async def promote(container: Application, args: argparse.Namespace) -> int:
    """The running host's candidate (in shadow or canary) becomes the champion now."""
    return await _ask(container, "promote", args.slot)


async def reject(container: Application, args: argparse.Namespace) -> int:
    """The running host rolls back and quarantines its candidate (or champion)."""
    return await _ask(container, "reject", args.slot)


async def _ask(container: Application, verb: str, slot: str | None) -> int:
    settings: Settings = container.config()
    done, said = await ask_host(ModelsLayout(settings.models_dir), verb, slot)
    if not done:
        print(f"refused: {_one_line(said)}", file=sys.stderr)
        return EXIT_FAILED
    print(said)
    return EXIT_OK


def _lifecycle_line(view: dict[str, Any]) -> str:
    if view.get("stage") in ("shadow", "canary"):
        left = view.get("time_left_seconds")
        remaining = "" if left is None else f", {left / 60:.0f} market minutes left"
        bars = view.get("figures", {}).get("bars", 0)
        return (
            f"  lifecycle: {view['stage']} of {view['candidate']} against {view['incumbent']} "
            f"(verdict {view['verdict']}, {bars} bars judged{remaining})"
        )
    last = ""
    if view.get("candidate") and view.get("verdict") != "pending":
        last = f"; last verdict on {view['candidate']}: {view['verdict']} ({view.get('reason')})"
    return f"  lifecycle: {view.get('mode')}, champion {view.get('incumbent') or '-'}{last}"


async def status(container: Application, args: argparse.Namespace) -> int:
    models = await _started(container, recover=False, repairable=True)
    state: StateStore = container.core.state()
    settings: Settings = container.config()
    record = await asyncio.to_thread(read_record, models.layout.lifecycle_file)
    report = status_report(models, state, describe(record, mode=settings.lifecycle.mode))
    report["trading"] = await _trading_figures(container)
    if args.json:
        print_json(report)
        return EXIT_OK
    for slot, info in report["models"].items():
        if info["version"] is None:
            print(f"{slot}: nothing serves  {info['path']}")
        else:
            sha = info["sha256"][:12]
            print(f"{slot}: version {info['version']}  sha256 {sha}  {info['path']}")
        provenance = info["provenance"]
        if provenance:
            print(f"  from {provenance['source']}: {_describe_origin(provenance)}")
        if info["problem"]:
            print(f"  problem: {info['problem']}")
        if "lifecycle" in info:
            print(_lifecycle_line(info["lifecycle"]))
        backups = info["backups"]
        print(f"  backups ({len(backups)}): {', '.join(backups) or 'none'}")
    for version, figures in report["trading"]["versions"].items():
        win_rate = figures["win_rate"]
        print(
            f"trading {version} ({figures['source']}): {figures['decisions']} decisions, "
            f"{figures['trades']} trades, win rate "
            f"{'-' if win_rate is None else f'{win_rate:.1%}'}, net {figures['net_return']:+.3%}, "
            f"max drawdown {figures['max_drawdown']:.2%}, Sharpe {figures['sharpe']:.2f}"
        )
    last = report["last_sync"]
    print(
        f"last sync: {last['at']} {last['outcome']}: {last['reason']}"
        if last
        else "last sync: never"
    )
    return EXIT_OK
