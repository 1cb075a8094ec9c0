"""From a downloaded artifact zip to installed models: extract, verify, hot-swap, record.

One path for every source (GitHub polling, a webhook push, the local inbox), so a zip is
checked the same way wherever it came from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.models import Candidate, SwapResult, version_label
from app.errors import ArtifactError, ArtifactTooLarge, ChecksumMismatch, ModelError
from app.fsutil import replace_durably
from app.services.extraction import ExtractionLimits, extract_artifact
from app.services.manifest import ArtifactManifest, SlotAssignment, assign_slots, build_manifest
from app.services.state import Provenance, Source, StateStore
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an artifact came from; becomes the provenance of what it installs."""

    source: Source
    artifact_name: str
    run_id: int | None = None
    run_attempt: int | None = None
    artifact_id: int | None = None
    head_sha: str | None = None
    branch: str | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """What became of one artifact: installed, up_to_date (already serving), rejected (its
    content is bad: not tried again) or failed (something else went wrong: tried again)."""

    outcome: str
    reason: str
    reason_code: str
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return self.outcome == "installed"


def reason_code(error: BaseException) -> str:
    """A bounded label for metrics, from the error's type (never its text)."""
    if isinstance(error, ChecksumMismatch):
        return "checksum_mismatch"
    if isinstance(error, ArtifactTooLarge):
        return "too_large"
    if isinstance(error, ArtifactError):
        return "unsafe_archive"
    if isinstance(error, ModelError):
        return "incompatible"
    return "other"


class ArtifactInstaller:
    """Installs verified artifacts through the brain (or onto disk when there is no brain)."""

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        brain: TradingBrain | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._state = state
        self._brain = brain
        self._clock = clock
        self._models_dir = settings.models_dir
        self._work_dir = self._models_dir / ".sync" / "work"

    async def install_zip(self, zip_path: Path, origin: Origin) -> InstallOutcome:
        """Extract, verify and install `zip_path`; never raises for a bad artifact."""
        work = self._work_dir / uuid.uuid4().hex
        try:
            manifest, assignment = await asyncio.to_thread(self._verify, zip_path, work)
            return await self._install(manifest, assignment, origin)
        except (ArtifactError, ModelError) as error:
            return InstallOutcome("rejected", str(error), reason_code(error))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)

    def _verify(self, zip_path: Path, work: Path) -> tuple[ArtifactManifest, SlotAssignment]:
        limits = ExtractionLimits.from_settings(self._settings.models)
        extracted = extract_artifact(zip_path, work, limits)
        manifest = build_manifest(
            extracted, require_checksums=self._settings.models.require_checksums
        )
        slots = {slot: s.path for slot, s in self._settings.brain.slots.items()}
        return manifest, assign_slots(manifest, slots)

    async def _install(
        self, manifest: ArtifactManifest, assignment: SlotAssignment, origin: Origin
    ) -> InstallOutcome:
        candidates = [
            Candidate(slot, manifest.root / model.path, model.version, model.sha256)
            for slot, model in assignment.by_slot.items()
        ]
        if self._brain is None:
            logger.warning(
                "⚠️ [CLOUD-SYNC] No trading brain to hot-swap into; installing files only"
            )
            return await asyncio.to_thread(self._install_files_only, manifest, assignment, origin)
        for candidate in candidates:
            logger.info(f"🔄 [CLOUD-SYNC] Triggering model hot-swap for: {candidate.path}")
        result = await self._brain.swap_in(candidates, source=origin.source)
        if not result.ok:
            logger.warning("⚠️ [CLOUD-SYNC] Model hot-swap failed - keeping current model")
            if result.retryable:
                return InstallOutcome("failed", result.reason, "other")
            return InstallOutcome("rejected", result.reason, "incompatible")
        if not result.installed:
            # Already serving; the provenance still moves on to this (newer) artifact, so the
            # next cycle does not take an in-between run for newer than what serves.
            serving = {c.slot: self._brain.snapshot.models[c.slot] for c in candidates}
            await asyncio.to_thread(
                self.record, dataclasses.replace(result, installed=serving), origin
            )
            return InstallOutcome("up_to_date", "already serving this model", "ok")
        logger.info("✅ [CLOUD-SYNC] Model hot-swap completed successfully")
        await asyncio.to_thread(self._place_other_files, manifest, assignment)
        versions = await asyncio.to_thread(self.record, result, origin)
        return InstallOutcome("installed", "installed", "ok", versions)

    def _other_files(
        self, manifest: ArtifactManifest, assignment: SlotAssignment
    ) -> list[PurePosixPath]:
        return list(manifest.other_files) + [model.path for model in assignment.unassigned]

    def _place_other_files(self, manifest: ArtifactManifest, assignment: SlotAssignment) -> None:
        """metadata.json, .pkl and unassigned models beside the models, each atomically."""
        store = self._brain.store if self._brain else None
        lock = store.acquire_write_lock() if store else None
        try:
            for relative in self._other_files(manifest, assignment):
                _place(manifest.root / relative, self._models_dir / relative)
        finally:
            if lock is not None:
                lock.release()

    def _install_files_only(
        self, manifest: ArtifactManifest, assignment: SlotAssignment, origin: Origin
    ) -> InstallOutcome:
        versions = {}
        for slot, model in assignment.by_slot.items():
            target = self._models_dir / self._settings.brain.slots[slot].path
            _place(manifest.root / model.path, target)
            versions[slot] = version_label(model.sha256, model.version)
            self._state.record_installed(
                self._provenance(slot, target, model.sha256, versions[slot], origin)
            )
        self._place_other_files(manifest, assignment)
        return InstallOutcome("installed", "installed (no brain to hot-swap)", "ok", versions)

    async def roll_back(self, slot: str | None, backup: str | None) -> SwapResult:
        """Restore a backup through the brain's checks, and record where it came from."""
        if self._brain is None:
            return SwapResult(ok=False, reason="there is no trading brain to roll back")
        result = await self._brain.rollback(slot, backup)
        if result.ok and result.installed:
            origin = Origin("rollback", artifact_name=backup or "the previous backup")
            await asyncio.to_thread(self.record, result, origin)
        return result

    def record(self, result: SwapResult, origin: Origin) -> dict[str, str]:
        """Write the provenance of every model `result` installed; their versions by slot."""
        versions = {}
        for slot, model in result.installed.items():
            versions[slot] = model.version
            self._state.record_installed(
                self._provenance(slot, model.path, model.sha256, model.version, origin)
            )
        return versions

    def _provenance(
        self, slot: str, path: Path, sha256: str, version: str, origin: Origin
    ) -> Provenance:
        return Provenance(
            slot=slot,
            path=str(path),
            sha256=sha256,
            version=version,
            installed_at=self._clock(),
            **dataclasses.asdict(origin),
        )


def _place(source: Path, target: Path) -> None:
    """Move a verified file from the work folder to its place under models/, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    replace_durably(source, target)
