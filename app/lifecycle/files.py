"""What the lifecycle asks of the install transaction: the champion's backup, loading it back
for a resumed stage, restoring it after a fail, and quarantining a model.

Each method logs what went wrong and never raises for the disk's sake: the lifecycle has
already decided, and the champion decides from memory (it is loaded) whatever the files do.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from app.brain.models import LoadedModel, SwapResult
from app.errors import AppError
from app.install.installer import ModelInstaller
from app.install.quarantine import QuarantineEntry
from app.install.records import Origin
from app.lifecycle.record import ModelRef


class ChampionFiles:
    """The decision slot's files, as the lifecycle needs them."""

    def __init__(self, models: ModelInstaller, slot: str) -> None:
        self._models = models
        self._brain = models.brain
        self._slot = slot

    def installed(self) -> LoadedModel:
        """The model the decision slot's file holds (not necessarily the one deciding)."""
        return self._brain.snapshot.models[self._slot]

    def is_quarantined(self, sha256: str) -> bool:
        """True when the quarantine holds the model (False when it cannot be read: the
        installer fails closed on its own)."""
        try:
            return self._models.quarantine.holds(sha256) is not None
        except AppError:
            return False

    def origin_of(self, model: LoadedModel) -> Origin | None:
        """The artifact the installed `model` came in (None once another is installed)."""
        provenance = self._models.provenance_of(model)
        return None if provenance is None else provenance.origin

    async def rid_of_quarantined(self) -> LoadedModel:
        """The installed model, after rolling back one that is quarantined (copied in while
        no host ran, or left by a rollback that could not finish)."""
        installed = self.installed()
        try:
            banned = await asyncio.to_thread(self._models.quarantine.holds, installed.sha256)
        except AppError as error:  # unreadable: installs are refused until it is mended
            logger.error(f"❌ [LIFECYCLE] {error}")
            return installed
        if banned is None:
            return installed
        logger.error(
            f"🚫 [LIFECYCLE] The active {installed.version} is quarantined ({banned.why}); "
            "rolling back before trading"
        )
        result = await self.roll_back(replacing=installed.sha256)
        if not result.ok:
            logger.error(f"❌ [LIFECYCLE] No backup to roll back to: {result.reason}")
        return self.installed()

    async def shelve(self, champion: LoadedModel) -> None:
        """A backup of the champion, so a judged candidate can always be rolled back to it."""
        try:
            await self._models.keep_a_backup(self._slot)
        except (AppError, OSError) as error:
            logger.warning(f"⚠️ [LIFECYCLE] No backup of the champion {champion.version}: {error}")

    async def load(self, model: ModelRef) -> LoadedModel | None:
        """The champion of a persisted stage, loaded from its backup (it is not installed)."""
        backup = await asyncio.to_thread(self._models.shelf.holding, self._slot, model.sha256)
        if backup is None:
            logger.warning(f"⚠️ [LIFECYCLE] No backup holds version {model.version} any more")
            return None
        try:
            return await asyncio.to_thread(
                self._brain.load_model,
                self._slot,
                backup,
                serving=self.installed(),
                version=model.version,
                known_sha256=model.sha256,
            )
        except (AppError, OSError) as error:
            logger.warning(f"⚠️ [LIFECYCLE] Backup {backup.name} cannot serve: {error}")
            return None

    def backup_holding(self, sha256: str) -> Path | None:
        """The newest intact backup of this model (blocking: it hashes)."""
        return self._models.shelf.holding(self._slot, sha256)

    def protect(self, champion: LoadedModel) -> None:
        """Keep the champion's newest backup through retention, while it is the champion."""
        self._models.shelf.protect(self._slot, champion.sha256)

    async def roll_back(self, backup: str | None = None, *, replacing: str) -> SwapResult:
        """Restore `backup` (default: the newest other one) over the model `replacing` names,
        only while it is the installed one."""
        return await self._models.rollback(
            self._slot, backup, source="lifecycle", replacing=replacing
        )

    async def restore(
        self, candidate: LoadedModel, champion: LoadedModel, why: str, *, quarantine: bool
    ) -> None:
        """After a fail: quarantine the candidate (if so), put the champion's file back while
        the candidate's is still the installed one (a model installed meanwhile stays)."""
        if quarantine:
            await self.quarantine(candidate, why)
        if self.installed().sha256 != candidate.sha256:
            logger.info(
                f"🔁 [LIFECYCLE] {self.installed().version} was installed meanwhile: "
                f"{candidate.version}'s file is gone, nothing to restore"
            )
            return
        backup = await asyncio.to_thread(self._models.shelf.holding, self._slot, champion.sha256)
        if backup is None:
            logger.error(
                f"❌ [LIFECYCLE] No backup holds {champion.version}: it decides from memory, and "
                f"the file on disk is still {candidate.version} until a model is installed"
            )
            return
        result = await self.roll_back(backup.name, replacing=candidate.sha256)
        if not result.ok:
            logger.error(
                f"❌ [LIFECYCLE] Restoring {backup.name} failed: {result.reason}; "
                f"{champion.version} decides from memory"
            )

    async def quarantine(
        self, model: LoadedModel, why: str, *, origin: Origin | None = None
    ) -> None:
        """Never install `model` (nor the artifact it came in) again until released.
        `origin`: its artifact, when `model` is no longer the installed one."""
        origin = origin or self.origin_of(model)
        entry = QuarantineEntry(
            sha256=model.sha256,
            slot=self._slot,
            version=model.version,
            at=datetime.now(UTC),
            why=why,
            origin=origin,
        )
        try:
            await asyncio.to_thread(self._models.quarantine.add, entry)  # says so itself
        except (AppError, OSError) as error:
            logger.error(f"❌ [LIFECYCLE] Could not quarantine {model.version}: {error}")
