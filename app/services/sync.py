"""CloudModelSynchronizationService: finds, downloads, verifies and hot-swaps new models.

One cycle (seed: ``SynchronizeModelsAsync``) lists successful runs newest first, stops at the
run already installed, picks the newest acceptable artifact (selection.py), streams it to
``models/.sync/downloads/``, and hands the zip to the installer. Everything it looked at is
recorded in the state, so a restart does not download again what it already judged.

One cycle at a time, however triggered: an asyncio lock in the process and ``sync.lock`` across
processes (``python -m app sync`` beside a running host). At most one cycle per
``min_interval_minutes`` unless forced, counted from the last *completed* cycle (installed, up to
date, rejected): a failed one (a bad token, a network fault) holds nothing back. Every cycle ends
with one line saying what it did and when the next may run (``SyncReport.retry_at``).

A quarantined artifact (``app/install/quarantine.py``) is refused before it is downloaded, and
an artifact whose model turns out to be quarantined is refused like any bad content: neither
is downloaded again while the quarantine lasts. Once it is released, the next cycle forgets
the refusal, so the artifact is eligible again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from loguru import logger

from app.errors import (
    ArtifactError,
    ArtifactExpired,
    ChecksumMismatch,
    InsufficientDiskSpace,
    ModelsDirectoryLocked,
    QuarantineUnreadable,
    RateLimited,
    UpstreamError,
    reason_code_of,
)
from app.install.layout import ModelsLayout
from app.install.records import Origin, Source
from app.services.breaker import CircuitOpen
from app.services.github import GitHubActionsClient
from app.services.github_types import Artifact, WorkflowRun
from app.services.installer import ArtifactInstaller, InstallOutcome
from app.services.outcome import CycleOutcome, Outcome
from app.services.selection import (
    ArtifactCandidate,
    SelectionPolicy,
    artifact_matches,
    choose_candidate,
    why_run_ineligible,
)
from app.services.state import StateStore
from app.settings import Settings

T = TypeVar("T")
MIB = 1 << 20
MAX_RUN_PAGES_ITEMS = 1000  # runs looked at per cycle, at most: older ones cannot be newer
MAX_DOWNLOADS_PER_CYCLE = 3
# Cycles that did their job, whatever they found; only these count against min_interval_minutes.


class Resilience(Protocol):
    async def call(
        self,
        operation: str,
        func: Callable[[], Awaitable[T]],
        *,
        timeout: Any = ...,  # noqa: ASYNC109 - the resilience service's own per-attempt bound
    ) -> T: ...


class Monitoring(Protocol):
    def record_sync(self, outcome: Any) -> None: ...
    def record_artifact(self, outcome: Any, reason: str) -> None: ...
    def record_download(self, bytes_: int, seconds: float) -> None: ...
    def set_rate_limit_remaining(self, remaining: int) -> None: ...
    def mark_sync_success(self, at: datetime) -> None: ...


ProgressFactory = Callable[[Artifact], "Progress"]


class Progress(Protocol):
    def update_to(self, received: int) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SyncReport:
    """How one cycle ended; what ``sync --json`` prints."""

    outcome: CycleOutcome
    reason: str
    artifact: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # The earliest moment an unforced cycle will run again (None: whenever it is asked).
    retry_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "artifact": self.artifact,
            "versions": self.versions,
            "retry_at": None if self.retry_at is None else self.retry_at.isoformat(),
        }


def describe_artifact(candidate: ArtifactCandidate) -> dict[str, Any]:
    run, artifact = candidate.run, candidate.artifact
    return {
        "id": artifact.id,
        "name": artifact.name,
        "size_in_bytes": artifact.size_in_bytes,
        "digest": artifact.digest,
        "run_id": run.id,
        "run_attempt": run.run_attempt,
        "head_sha": run.head_sha,
        "branch": run.head_branch,
        "event": run.event,
    }


class CloudModelSynchronizationService:
    """Keeps the brain on the newest good model that GitHub Actions produced."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        installer: ArtifactInstaller,
        github: GitHubActionsClient | None,
        *,
        resilience: Resilience | None = None,
        monitoring: Monitoring | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._state = state
        self._installer = installer
        self._github = github
        self._resilience = resilience
        self._monitoring = monitoring
        self._clock = clock
        self._policy = SelectionPolicy.from_settings(settings.github)
        self._layout = ModelsLayout(settings.models_dir)
        self._downloads = self._layout.downloads_dir
        self.progress: ProgressFactory | None = None
        if github is None and settings.cloud_sync.enabled:
            logger.warning(
                "⚠️ [CLOUD-SYNC] No GitHub token configured - cloud model sync will be disabled"
            )

    @property
    def enabled(self) -> bool:
        return self._settings.cloud_sync.enabled and self._github is not None

    # -- the cycle -----------------------------------------------------------------------

    async def synchronize_models(self, *, force: bool = False) -> SyncReport:
        """One synchronization cycle (seed: SynchronizeModelsAsync)."""
        return await self._exclusive(self._poll, force=force)

    async def synchronize_run(self, run: WorkflowRun) -> SyncReport:
        """A cycle that goes straight to one run (a webhook delivery): no listing of runs."""

        async def one_run(github: GitHubActionsClient) -> SyncReport:
            reason = why_run_ineligible(run, self._policy)
            if reason is not None:
                return SyncReport(CycleOutcome.SKIPPED, f"run {run.id} not eligible: {reason}")
            return await self._install_newest([run], github, source="webhook")

        return await self._exclusive(one_run, force=True)

    def claim(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold the artifact pipeline (see :meth:`ArtifactInstaller.claim`)."""
        return self._installer.claim()

    async def _exclusive(
        self, body: Callable[[GitHubActionsClient], Awaitable[SyncReport]], *, force: bool
    ) -> SyncReport:
        if not self._settings.cloud_sync.enabled:
            return self._finish(
                SyncReport(CycleOutcome.DISABLED, "cloud_sync.enabled is false"), record=False
            )
        if self._github is None:
            return self._finish(
                SyncReport(CycleOutcome.DISABLED, "no GitHub token configured"), record=False
            )
        github = self._github
        async with self.claim() as claimed:
            if not claimed:
                report = SyncReport(CycleOutcome.SKIPPED, "another process is synchronizing")
                return self._finish(report, record=False)
            if not force and (skipped := self._too_soon()) is not None:
                logger.info(f"🌐 [CLOUD-SYNC] Rate limiting - skipping sync ({skipped.reason})")
                return self._finish(skipped, record=False)
            logger.info("🌐 [CLOUD-SYNC] Starting model synchronization...")
            await asyncio.to_thread(self._forget_released)
            github.begin_cycle()
            try:
                report = await body(github)
            except UpstreamError as error:
                retry_at = None
                if isinstance(error, RateLimited | CircuitOpen):
                    wait = error.retry_after if isinstance(error, RateLimited) else error.retry_in
                    retry_at = self._clock() + timedelta(seconds=wait)
                report = SyncReport(CycleOutcome.FAILED, str(error), retry_at=retry_at)
            return self._finish(report, record=True)

    def _forget_released(self) -> None:
        """Make the artifacts refused because of a quarantine since released eligible again."""
        try:
            held = {entry.sha256 for entry in self._installer.quarantine.entries()}
        except QuarantineUnreadable:
            return  # failing closed: nothing is forgotten while the quarantine cannot be read
        for record in self._state.forget_released(held):
            logger.info(
                f"🌐 [CLOUD-SYNC] Artifact {record.name} ({record.artifact_id}) is no longer "
                "quarantined: eligible again"
            )

    def _too_soon(self) -> SyncReport | None:
        """The skip, if the last completed cycle is within ``min_interval_minutes``."""
        last = self._state.state.last_completed_sync
        floor = timedelta(minutes=self._settings.cloud_sync.min_interval_minutes)
        if last is None or floor <= timedelta(0):
            return None
        elapsed = self._clock() - last.at
        if elapsed >= floor:
            return None
        allowed = last.at + floor
        reason = (
            f"rate limiting: last completed sync {int(elapsed.total_seconds())}s ago "
            f"(minimum {floor}); next unforced sync from {allowed:%H:%M:%S} UTC"
        )
        return SyncReport(CycleOutcome.SKIPPED, reason, retry_at=allowed)

    def _finish(self, report: SyncReport, *, record: bool) -> SyncReport:
        if record:
            artifact_id = report.artifact["id"] if report.artifact else None
            completed = report.outcome.completed
            last = self._state.record_sync(
                outcome=report.outcome,
                reason=report.reason,
                artifact_id=artifact_id,
                completed=completed,
            )
            floor = timedelta(minutes=self._settings.cloud_sync.min_interval_minutes)
            if completed and report.retry_at is None and floor > timedelta(0):
                report = dataclasses.replace(report, retry_at=last.at + floor)
            _log_summary(report)
        if self._monitoring is not None:
            self._monitoring.record_sync(report.outcome)
            if self._github is not None and self._github.rate_limit_remaining is not None:
                self._monitoring.set_rate_limit_remaining(self._github.rate_limit_remaining)
            if report.outcome.completed:
                self._monitoring.mark_sync_success(self._clock())
        return report

    async def _poll(self, github: GitHubActionsClient) -> SyncReport:
        installed = self._installed_run()
        runs = await self._call("github.list_runs", lambda: self._eligible_runs(github, installed))
        if not runs:
            return SyncReport(CycleOutcome.UP_TO_DATE, "no new successful run")
        return await self._install_newest(runs, github)

    def _installed_run(self) -> tuple[int, int] | None:
        """The newest run ever installed: from the provenance files, and from the state's record
        of installed (or already serving) artifacts, which survives a rollback or an unreadable
        provenance file."""
        runs = [self._state.installed_run(slot) for slot in self._settings.brain.slots]
        runs += [
            (record.run_id, record.run_attempt or 1)
            for record in self._state.state.artifacts.values()
            if record.outcome in {Outcome.INSTALLED, Outcome.UP_TO_DATE}
            and record.run_id is not None
        ]
        known = [run for run in runs if run is not None]
        return max(known) if known else None

    async def _eligible_runs(
        self, github: GitHubActionsClient, installed: tuple[int, int] | None
    ) -> list[WorkflowRun]:
        """Eligible runs newer than the installed one, newest first; stops paging at it."""
        runs: list[WorkflowRun] = []
        seen = 0
        async for run in github.iter_runs():
            seen += 1
            if installed is not None and (run.id, run.run_attempt) <= installed:
                break
            reason = why_run_ineligible(run, self._policy)
            if reason is None:
                runs.append(run)
            else:
                logger.debug(f"🌐 [CLOUD-SYNC] Ignoring run {run.id}: {reason}")
            if seen >= MAX_RUN_PAGES_ITEMS:
                break
        return runs

    async def _install_newest(
        self, runs: list[WorkflowRun], github: GitHubActionsClient, *, source: Source = "github"
    ) -> SyncReport:
        """Try the newest acceptable artifacts of `runs` until one installs (bounded)."""
        installed = self._installed_run()
        fallback: SyncReport | None = None  # the first refusal, if nothing installs
        attempts = 0
        for run in runs:
            if self._state.is_exhausted(run.id):
                continue
            artifacts = await self._call(
                "github.list_artifacts", functools.partial(github.list_artifacts, run.id)
            )
            candidates = [
                ArtifactCandidate(run, a) for a in artifacts if artifact_matches(a, self._policy)
            ]
            while attempts < MAX_DOWNLOADS_PER_CYCLE:
                chosen, _skipped = choose_candidate(
                    candidates,
                    processed_ids=self._state.processed_artifact_ids(),
                    installed=installed,
                )
                if chosen is None:
                    # A completed run's artifacts are final: nothing here will become eligible.
                    self._state.mark_exhausted(run.id)
                    break
                attempts += 1
                report = await self._process(chosen, github, source)
                if report.outcome in {
                    CycleOutcome.INSTALLED,
                    CycleOutcome.UP_TO_DATE,
                    CycleOutcome.FAILED,
                }:
                    return report
                fallback = fallback or report
        return fallback or SyncReport(CycleOutcome.UP_TO_DATE, "no new artifact to install")

    async def _process(
        self, candidate: ArtifactCandidate, github: GitHubActionsClient, source: Source
    ) -> SyncReport:
        run, artifact = candidate.run, candidate.artifact
        described = describe_artifact(candidate)
        origin = Origin(
            source=source,
            artifact_name=artifact.name,
            run_id=run.id,
            run_attempt=run.run_attempt,
            artifact_id=artifact.id,
            head_sha=run.head_sha,
            branch=run.head_branch,
            digest=artifact.digest,
        )
        refused = await asyncio.to_thread(self._installer.refused_before_download, origin)
        if refused is not None:  # quarantined: not even downloaded
            return self._record(candidate, refused, described)
        logger.info(f"🌐 [CLOUD-SYNC] Downloading new model: {artifact.name} from run {run.id}")
        async with self._downloaded(artifact, github) as (zip_path, failure):
            if failure is not None:
                return self._record(candidate, failure, described)
            assert zip_path is not None
            outcome = await self._install(zip_path, origin)
        return self._record(candidate, outcome, described)

    async def _install(self, zip_path: Path, origin: Origin) -> InstallOutcome:
        """The installer's verdict on one zip; an error is this artifact's outcome, not raised.

        The host's state (a full disk, a busy models directory) fails it for this cycle only;
        anything else rejects this artifact, so that the cycle goes on to the next one.
        """
        try:
            return await self._installer.install_zip(zip_path, origin)
        except (InsufficientDiskSpace, ModelsDirectoryLocked) as error:
            return InstallOutcome(Outcome.FAILED, str(error), "install_failed")
        except Exception as error:
            logger.opt(exception=error).debug(f"Installing {origin.artifact_name} raised")
            reason = f"could not be handled: {type(error).__name__}: {error}"
            return InstallOutcome(Outcome.REJECTED, reason, "other")

    @contextlib.asynccontextmanager
    async def _downloaded(
        self, artifact: Artifact, github: GitHubActionsClient
    ) -> AsyncIterator[tuple[Path | None, InstallOutcome | None]]:
        """The artifact's zip on disk (removed afterwards), or why it could not be had."""
        path = self._downloads / f"{artifact.id}-{uuid.uuid4().hex}.zip"
        progress = self.progress(artifact) if self.progress is not None else None
        max_bytes = int(self._settings.models.max_artifact_mb * MIB)
        resilience = self._settings.resilience
        deadline = resilience.download_deadline_seconds
        started = time.perf_counter()
        try:
            try:
                await asyncio.to_thread(self._downloads.mkdir, parents=True, exist_ok=True)
                # The deadline covers every attempt: a host that drips bytes, or keeps failing
                # slowly, cannot hold the cycle for longer.
                async with asyncio.timeout(deadline):
                    await self._call(
                        "github.download_artifact",
                        lambda: github.download_artifact(
                            artifact,
                            path,
                            max_bytes=max_bytes,
                            on_progress=progress.update_to if progress else None,
                            min_kbps=resilience.min_download_kbps,
                        ),
                        streaming=True,
                    )
            except TimeoutError:
                reason = (
                    f"the download of {artifact.name!r} did not finish within {deadline:g}s "
                    "(resilience.download_deadline_seconds)"
                )
                yield None, InstallOutcome(Outcome.FAILED, reason, "download_failed")
                return
            except ArtifactExpired as error:
                yield None, InstallOutcome(Outcome.EXPIRED, str(error), "expired")
                return
            except ChecksumMismatch as error:  # here the zip's digest, not a metadata checksum
                yield None, InstallOutcome(Outcome.REJECTED, str(error), "digest_mismatch")
                return
            except ArtifactError as error:
                yield None, InstallOutcome(Outcome.REJECTED, str(error), reason_code_of(error))
                return
            except (UpstreamError, InsufficientDiskSpace) as error:
                yield None, InstallOutcome(Outcome.FAILED, str(error), "download_failed")
                return
            except OSError as error:  # the downloads folder cannot be made or written
                reason = f"cannot write {self._downloads}: {error.strerror or error}"
                yield None, InstallOutcome(Outcome.FAILED, reason, "download_failed")
                return
            finally:
                if progress is not None:
                    progress.close()
            if self._monitoring is not None:
                self._monitoring.record_download(path.stat().st_size, time.perf_counter() - started)
            yield path, None
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    def _record(
        self, candidate: ArtifactCandidate, outcome: InstallOutcome, described: dict[str, Any]
    ) -> SyncReport:
        run, artifact = candidate.run, candidate.artifact
        self._state.record_artifact(
            artifact_id=artifact.id,
            name=artifact.name,
            outcome=outcome.outcome,
            reason=outcome.reason,
            run_id=run.id,
            run_attempt=run.run_attempt,
            digest=artifact.digest,
            quarantined=outcome.quarantined,
        )
        if self._monitoring is not None:
            self._monitoring.record_artifact(outcome.outcome.metric, outcome.reason_code)
        if outcome.outcome in {
            Outcome.REJECTED,
            Outcome.EXPIRED,
        }:  # a failure is the cycle's one summary line
            label = f"{artifact.name} ({artifact.id})"
            logger.warning(f"⚠️ [CLOUD-SYNC] Artifact {label} {outcome.outcome}: {outcome.reason}")
        return SyncReport(outcome.outcome.cycle, outcome.reason, described, outcome.versions)

    async def _call(
        self, operation: str, func: Callable[[], Awaitable[T]], *, streaming: bool = False
    ) -> T:
        if self._resilience is not None:
            if streaming:  # a large download must not be cut by the per-request timeout
                return await self._resilience.call(operation, func, timeout=None)
            return await self._resilience.call(operation, func)
        return await func()

    # -- the background loop ---------------------------------------------------------------

    async def run_forever(self, sleep: Callable[[float], Awaitable[bool]]) -> None:
        """A sync at start-up (if configured), then one every ``interval_minutes``.

        `sleep(seconds)` returns True when the host is stopping.
        """
        if not self.enabled:
            return
        interval = self._settings.cloud_sync.interval_minutes * 60
        if not self._settings.cloud_sync.sync_on_startup and await sleep(interval):
            return
        while True:
            wait = interval
            try:
                report = await self.synchronize_models()
            except Exception as error:  # the loop must outlive any one cycle's bug
                logger.opt(exception=error).error(f"❌ [CLOUD-SYNC] Sync cycle crashed: {error}")
            else:
                if report.retry_at is not None:  # a rate limit past the interval: wait it out
                    wait = max(wait, (report.retry_at - self._clock()).total_seconds())
            at = self._clock() + timedelta(seconds=wait)
            logger.info(f"🌐 [CLOUD-SYNC] Next sync at {at:%H:%M:%S} UTC (in {wait / 60:.0f} min)")
            if await sleep(wait):
                return


def _log_summary(report: SyncReport) -> None:
    """The one line that says how a cycle ended and when the next may run."""
    when = None if report.retry_at is None else f"{report.retry_at:%H:%M:%S} UTC"
    artifact = report.artifact or {}
    log = logger.bind(
        outcome=str(report.outcome), reason=report.reason, artifact=artifact.get("name")
    )
    if report.outcome is CycleOutcome.FAILED:
        then = f"not before {when}" if when else "the next cycle tries again"
        log.error(
            f"❌ [CLOUD-SYNC] Synchronization failed: {report.reason}; {then} "
            "(a failed sync does not count against min_interval_minutes)"
        )
        return
    then = f"; next unforced sync from {when}" if when else ""
    log.info(f"🌐 [CLOUD-SYNC] Synchronization {report.outcome}: {report.reason}{then}")
