"""From a downloaded artifact zip to installed models: extract, verify, hot-swap, record.

One path for every source (GitHub polling, a webhook push, the local inbox), so a zip is
checked the same way wherever it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from loguru import logger

from app.brain.models import Candidate, SwapResult, version_label
from app.errors import (
    ArtifactError,
    ModelError,
    ModelQuarantined,
    ModelsDirectoryLocked,
    QuarantineUnreadable,
    reason_code_of,
)
from app.install.installer import ModelInstaller
from app.install.layout import ModelsLayout
from app.install.lock import DirectoryLock
from app.install.quarantine import Quarantine
from app.install.records import Origin
from app.install.transaction import Transaction
from app.services.extraction import ExtractionLimits, extract_artifact
from app.services.manifest import ArtifactManifest, SlotAssignment, assign_slots, build_manifest
from app.services.outcome import Outcome
from app.services.state import StateStore
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """What became of one artifact: installed, up_to_date (already serving), rejected (its
    content is bad: not tried again) or failed (something else went wrong: tried again)."""

    outcome: Outcome
    reason: str
    reason_code: str  # a key of monitoring.ARTIFACT_REASONS
    versions: dict[str, str] = field(default_factory=dict)
    # The SHA-256 of the quarantined model that refused it: the refusal lasts as long as that.
    quarantined: str | None = None

    @property
    def installed(self) -> bool:
        return self.outcome is Outcome.INSTALLED


def rejection(reason: str, error: BaseException | None) -> InstallOutcome:
    """The outcome of an artifact refused for its content or its model (`error`, if known)."""
    quarantined = error.sha256 if isinstance(error, ModelQuarantined) else None
    return InstallOutcome(Outcome.REJECTED, reason, reason_code_of(error), quarantined=quarantined)


def check_placements(manifest: ArtifactManifest) -> None:
    """Refuse an artifact with any file in a reserved folder (``.sync/``, ``backup/``, ...)."""
    members = [model.path for model in manifest.models] + list(manifest.other_files)
    for member in members:
        why = ModelsLayout.reserved_reason(member)
        if why is not None:
            raise ArtifactError(f"member {member} may not be installed: {why}")


class ArtifactInstaller:
    """The artifact pipeline that every source feeds (GitHub poll, webhook, inbox): one claim at
    a time, then extract, verify and install through the model installer (or files only,
    without a brain)."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        models: ModelInstaller | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._state = state
        self._models = models
        self._clock = clock
        self._layout = ModelsLayout(settings.models_dir)
        self.quarantine = models.quarantine if models is not None else Quarantine(self._layout)
        self._claimed = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[bool]:
        """Hold the pipeline (this process's lock and ``sync.lock``) with fresh state.

        Yields False, holding nothing, when another process holds it. Every source claims it,
        so one artifact at a time goes through the pipeline and the state has one writer.
        """
        async with self._claimed:
            try:
                lock = await asyncio.to_thread(DirectoryLock, self._layout.sync_lock)
            except ModelsDirectoryLocked:
                yield False
                return
            try:
                await asyncio.to_thread(self._state.load)
                yield True
            finally:
                await asyncio.to_thread(self._state.flush)
                lock.release()

    def refused_before_download(self, origin: Origin) -> InstallOutcome | None:
        """The outcome of an artifact refused before it is fetched (it is quarantined), or None
        when it may be fetched (blocking)."""
        try:
            entry = self.quarantine.holds_artifact(origin)
        except QuarantineUnreadable as error:
            return InstallOutcome(Outcome.FAILED, str(error), error.reason_code)
        if entry is None:
            return None
        refusal = entry.refusal()
        return rejection(str(refusal), refusal)

    async def install_zip(self, zip_path: Path, origin: Origin) -> InstallOutcome:
        """Extract, verify and install `zip_path`; never raises for a bad artifact."""
        work = self._layout.work_dir / uuid.uuid4().hex
        try:
            manifest, assignment = await asyncio.to_thread(self._verify, zip_path, work)
            return await self._install(manifest, assignment, origin)
        except (ArtifactError, ModelError) as error:
            return rejection(str(error), error)
        except QuarantineUnreadable as error:  # the host's state: the artifact is tried again
            return InstallOutcome(Outcome.FAILED, str(error), error.reason_code)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)

    def _verify(self, zip_path: Path, work: Path) -> tuple[ArtifactManifest, SlotAssignment]:
        limits = ExtractionLimits.from_settings(self._settings.models)
        extracted = extract_artifact(zip_path, work, limits)
        manifest = build_manifest(
            extracted, require_checksums=self._settings.models.require_checksums
        )
        check_placements(manifest)
        slots = {slot: s.path for slot, s in self._settings.brain.slots.items()}
        return manifest, assign_slots(manifest, slots)

    def _other_files(
        self, manifest: ArtifactManifest, assignment: SlotAssignment
    ) -> list[tuple[Path, Path]]:
        """metadata.json, .pkl and unassigned models: (verified file, final path)."""
        relatives: list[PurePosixPath] = list(manifest.other_files)
        relatives += [model.path for model in assignment.unassigned]
        return [(manifest.root / rel, self._layout.path_of(rel)) for rel in relatives]

    async def _install(
        self, manifest: ArtifactManifest, assignment: SlotAssignment, origin: Origin
    ) -> InstallOutcome:
        if self._models is None:
            logger.warning(
                "⚠️ [CLOUD-SYNC] No trading brain to hot-swap into; installing files only"
            )
            return await asyncio.to_thread(self._install_files_only, manifest, assignment, origin)
        candidates = [
            Candidate(slot, manifest.root / model.path, model.version, model.sha256)
            for slot, model in assignment.by_slot.items()
        ]
        for candidate in candidates:
            logger.info(f"🔄 [CLOUD-SYNC] Triggering model hot-swap for: {candidate.path}")
        result = await self._models.swap_in(
            candidates, origin=origin, other_files=self._other_files(manifest, assignment)
        )
        if not result.ok:
            logger.warning("⚠️ [CLOUD-SYNC] Model hot-swap failed - keeping current model")
            if result.retryable:
                return InstallOutcome(Outcome.FAILED, result.reason, reason_code_of(result.error))
            return rejection(result.reason, result.error)
        if not result.installed:
            return InstallOutcome(
                Outcome.UP_TO_DATE, "already serving this model", "already_installed"
            )
        logger.info("✅ [CLOUD-SYNC] Model hot-swap completed successfully")
        versions = {slot: model.version for slot, model in result.installed.items()}
        return InstallOutcome(Outcome.INSTALLED, "installed", "ok", versions)

    def _install_files_only(
        self, manifest: ArtifactManifest, assignment: SlotAssignment, origin: Origin
    ) -> InstallOutcome:
        """Without a brain: the same transaction, with nothing validated or published."""
        for model in assignment.by_slot.values():
            self.quarantine.check(model.sha256)
        now = self._clock()
        versions = {}
        lock = DirectoryLock(
            self._layout.write_lock, wait_seconds=self._settings.models.lock_wait_seconds
        )
        try:
            transaction = Transaction(self._layout)
            try:
                for slot, model in assignment.by_slot.items():
                    target = self._layout.path_of(self._settings.brain.slots[slot].path)
                    staged = transaction.stage_copy(manifest.root / model.path, suffix=".onnx")
                    transaction.place(staged, target, model.sha256)
                    versions[slot] = version_label(model.sha256, model.version)
                    transaction.place_provenance(
                        origin, slot, target, sha256=model.sha256, version=versions[slot], at=now
                    )
                for source, final in self._other_files(manifest, assignment):
                    staged = transaction.stage_copy(source, suffix=final.suffix)
                    transaction.place(staged, final)
                transaction.apply()
                transaction.commit()
            except BaseException:
                transaction.abort()
                raise
        finally:
            lock.release()
        return InstallOutcome(Outcome.INSTALLED, "installed (no brain to hot-swap)", "ok", versions)

    async def roll_back(self, slot: str | None, backup: str | None) -> SwapResult:
        """Restore a backup through the brain's checks (its provenance comes back with it)."""
        if self._models is None:
            return SwapResult(ok=False, reason="there is no trading brain to roll back")
        return await self._models.rollback(slot, backup)
