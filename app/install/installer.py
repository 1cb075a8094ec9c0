"""Models in and out of service: start-up, hot swaps, rollbacks and the watch of the disk.

The one writer of ``models/``. A swap (seed: ``ReloadModelsAsync``) stages the candidates in a
:class:`~app.install.transaction.Transaction`, has the brain build and validate their sessions
in worker threads, plans a backup of each model being replaced (only a model that really
served: a refused file is never backed up), the provenance records and the artifact's other
files, applies them all under the journal, lets the brain publish the new snapshot, and
commits. Any failure leaves the old models serving and the disk as it was.

At start-up an interrupted install is undone and every leftover removed before anything loads
(``startup.py``).
A slot whose active file cannot serve starts on its newest valid backup (``models.on_bad_active:
fall_back``), loudly, until an install or rollback mends the file.

A quarantined model (``app/install/quarantine.py``) is refused by every install path: a swap,
a repair, a file replaced on disk; a rollback passes over it. By the SHA-256 the caller gives
before anything is staged, else as soon as the model is hashed (beside its validation, as every
candidate is), before anything is placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.models import BrainSnapshot, Candidate, LoadedModel, SwapEvent, SwapResult
from app.brain.runtime import FileIdentity
from app.brain.validation import check_file
from app.errors import AppError, ModelError, ModelsDirectoryLocked, QuarantineUnreadable
from app.fsutil import sha256_of_file
from app.install.backups import next_backup_name
from app.install.layout import ModelsLayout
from app.install.lock import DirectoryLock
from app.install.quarantine import Quarantine
from app.install.records import BackupRecord, Origin, Provenance, Records, Source
from app.install.shelf import BackupShelf, RollbackChoice
from app.install.startup import (
    clear_interrupted_work,
    files_a_recovery_restores,
    newest_valid_backup,
)
from app.install.transaction import Transaction
from app.settings import Settings

# Flushing a staged candidate overlaps its validation (both release the GIL).
_FLUSHING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-flush")

SwapListener = Callable[[SwapEvent], None]
OtherFile = tuple[Path, Path]  # (verified file in the work folder, its final path)
Screen = Callable[[str], None]  # raises when the model with this SHA-256 may not be installed
# The refusal says nothing about the model: the same candidate may well install on a later try.
_TRANSIENT = (ModelsDirectoryLocked, QuarantineUnreadable)


def _admit_any(_sha256: str) -> None:
    """The screen of an install that may take a quarantined model (``allow_quarantined``)."""


class ModelInstaller:
    """Installs, rolls back and watches the models a brain serves."""

    def __init__(
        self,
        settings: Settings,
        brain: TradingBrain,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._brain = brain
        self._clock = clock
        self.layout = ModelsLayout(settings.models_dir)
        self.records = Records(self.layout)
        self.shelf = BackupShelf(self.layout, self.records, settings.models.backup_retention)
        self.quarantine = Quarantine(self.layout)
        self._lock = asyncio.Lock()
        self._listeners: list[SwapListener] = []
        self._refused: dict[str, FileIdentity] = {}  # the watch's memory of refused files
        self.unservable: dict[str, str] = {}  # slots nothing could serve at start, and why
        brain.attach_reloader(self)

    @property
    def brain(self) -> TradingBrain:
        return self._brain

    def add_listener(self, listener: SwapListener) -> None:
        """Call `listener` after every swap attempt; it must not block or raise."""
        self._listeners.append(listener)

    @contextmanager
    def write_lock(self, *, wait_seconds: float | None = None) -> Iterator[None]:
        """Hold the cross-process write lock (ModelsDirectoryLocked when another holds it)."""
        wait = self._settings.models.lock_wait_seconds if wait_seconds is None else wait_seconds
        lock = DirectoryLock(self.layout.write_lock, wait_seconds=wait)
        try:
            yield
        finally:
            lock.release()

    def recorded_version(self, slot: str, sha256: str) -> str | None:
        return self.records.version_of(slot, sha256)

    def _slot_path(self, slot: str) -> Path:
        return self.layout.path_of(self._settings.brain.slots[slot].path)

    # -- start-up ------------------------------------------------------------------------

    async def start(
        self, *, recover: bool = True, strict: bool = False, repairable: bool = False
    ) -> BrainSnapshot | None:
        """Undo an interrupted install and clear leftovers (unless read-only), then load.

        A read-only start (``status``, ``--smoke``) loads what the next writing start would
        serve. `strict` (the host) honours ``models.on_bad_active: refuse``. `repairable`
        (``install``, ``rollback``, ``status``): a slot that nothing can serve (a bad active
        file and no valid backup) does not fail the start; it is in :attr:`unservable`, the
        brain stays unloaded, and an install or rollback into it repairs it.
        """
        if self._brain.loaded:
            return self._brain.snapshot
        snapshot = await asyncio.to_thread(self._start_blocking, recover, strict, repairable)
        for slot, model in snapshot.models.items() if snapshot is not None else ():
            logger.info(
                f"✅ [MODEL-RELOAD] Serving {slot} version {model.version} from {model.path}"
            )
        return snapshot

    def _start_blocking(
        self, recover_first: bool, strict: bool, repairable: bool = False
    ) -> BrainSnapshot | None:
        slots = list(self._settings.brain.slots)
        actives = [self._slot_path(slot) for slot in slots]
        if recover_first:
            with self.write_lock():
                clear_interrupted_work(self.layout, self.shelf, slots, actives)
        # Read-only, after a crash mid-install: what a writing start will have put back.
        restored = {} if recover_first else files_a_recovery_restores(self.layout)
        models: dict[str, LoadedModel] = {}
        for slot, path in zip(slots, actives, strict=True):
            source = restored.get(path, path)
            try:
                models[slot] = self._brain.load_model(
                    slot, source, serving=None, installed_at=path, alongside=models
                )
            except ModelError as error:
                refuse = strict and self._settings.models.on_bad_active == "refuse"
                fallback = None if refuse else self._fall_back(slot, path, error, models)
                if fallback is None:
                    reason = f"slot {slot!r} cannot start from {path}: {error}"
                    if not repairable:
                        raise ModelError(reason) from None
                    self.unservable[slot] = reason
                    logger.error(f"❌ [MODEL-RELOAD] {reason}; no valid backup either")
                    continue
                models[slot] = fallback
        if self.unservable:
            return None
        return self._brain.publish(models)

    def _fall_back(
        self, slot: str, path: Path, error: ModelError, loaded: Mapping[str, LoadedModel]
    ) -> LoadedModel | None:
        found = newest_valid_backup(self._brain, self.shelf, slot, path=path, loaded=loaded)
        if found is None:
            return None
        backup, model = found
        reason = f"active file {path} cannot serve ({error}); serving backup {backup.name}"
        logger.error(f"❌ [MODEL-RELOAD] Slot {slot}: {reason}")
        with contextlib.suppress(FileNotFoundError):
            self._refused[slot] = FileIdentity.of(path)  # the watch will not rebuild it
        return dataclasses.replace(model, fallback_reason=reason)

    # -- swaps ---------------------------------------------------------------------------

    async def reload(self, path: Path, slot: str, version: str | None) -> bool:
        """The brain's ``reload_models``."""
        result = await self.swap_in([Candidate(slot, path, version)])
        return result.ok

    async def swap_in(
        self,
        candidates: Sequence[Candidate],
        *,
        origin: Origin | None = None,
        other_files: Sequence[OtherFile] = (),
        allow_quarantined: bool = False,
        replacing: Mapping[str, str] | None = None,
    ) -> SwapResult:
        """Validate, back up, install and swap a set of models (and their files), all or nothing.

        `origin` becomes the provenance of what is installed (default: a file from the CLI).
        A quarantined model is refused (ModelQuarantined), unless `allow_quarantined`: the
        lifecycle's own way back to a model it chose, which no command offers. `replacing`
        (slot -> SHA-256): install only while those slots hold those models, checked under the
        write lock (the lifecycle's restore must not overwrite a model installed meanwhile).
        """
        origin = origin or Origin(source="cli")
        slots = tuple(candidate.slot for candidate in candidates)
        offered = {candidate.slot: candidate.path for candidate in candidates}
        for candidate in candidates:
            logger.info(f"🔄 [MODEL-RELOAD] Starting model reload: {candidate.path}")
        screen = _admit_any if allow_quarantined else self.quarantine.check
        async with self._lock:
            started = time.perf_counter()
            try:
                installed, backups = await asyncio.to_thread(
                    self._swap_blocking, candidates, origin, other_files, screen, replacing
                )
            except Exception as error:
                known = isinstance(error, AppError)
                reason = str(error) if known else f"unexpected {type(error).__name__}: {error}"
                result = SwapResult(
                    ok=False,
                    reason=reason,
                    retryable=not known or isinstance(error, _TRANSIENT),
                    seconds=time.perf_counter() - started,
                    error=error,
                )
                log = logger.bind(
                    slot=",".join(slots), outcome="refused", reason=reason, source=origin.source
                )
                if known:
                    # A refusal is expected: one line, no traceback.
                    log.error(f"❌ [MODEL-RELOAD] Model reload refused: {error}")  # noqa: TRY400
                else:
                    log.opt(exception=error).error(
                        f"❌ [MODEL-RELOAD] Model reload failed: {reason}"
                    )
                self._tell(SwapEvent("refused", result, origin.source, slots, offered))
                return result
        result = SwapResult(
            ok=True,
            reason="installed" if installed else "already serving",
            installed=installed,
            backups=backups,
            seconds=time.perf_counter() - started,
        )
        for slot, model in installed.items():
            self._refused.pop(slot, None)
            logger.bind(
                slot=slot, version=model.version, outcome="installed", source=origin.source
            ).info(f"✅ [MODEL-RELOAD] Model reloaded successfully: {slot} version {model.version}")
        if installed:
            kind = "rolled_back" if origin.source in ("rollback", "lifecycle") else "installed"
            self._tell(SwapEvent(kind, result, origin.source, slots, offered))
        return result

    def _swap_blocking(
        self,
        candidates: Sequence[Candidate],
        origin: Origin,
        other_files: Sequence[OtherFile],
        screen: Screen,
        replacing: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, LoadedModel], dict[str, Path]]:
        _screen_known(candidates, screen)
        if not self._brain.loaded:
            return self._repair_blocking(candidates, origin, screen), {}
        _check_candidates(candidates, self._brain.snapshot)
        with self.write_lock():
            current = self._catch_up([c.slot for c in candidates])
            for slot, sha256 in (replacing or {}).items():
                now = current.models[slot]
                if now.sha256 != sha256:
                    raise ModelError(
                        f"slot {slot!r} holds {now.version} now, not the model this install "
                        f"was to replace ({sha256[:12]}): nothing changed"
                    )
            transaction = Transaction(self.layout)
            published = False
            try:
                prepared = self._stage_and_validate(transaction, candidates, current, screen)
                if not prepared:
                    transaction.abort()  # nothing to change: drop what was staged
                    return {}, {}
                backups = self._plan(transaction, prepared, current, origin, other_files)
                transaction.apply()
                installed = {
                    slot: dataclasses.replace(model, identity=FileIdentity.of(model.path))
                    for slot, model in prepared.items()
                }
                self._brain.publish(installed)
                published = True
                transaction.commit()
            except BaseException:
                transaction.abort()
                if published:
                    self._brain.publish({slot: current.models[slot] for slot in prepared})
                raise
            for slot in installed:
                self.shelf.prune(slot, made=backups.get(slot))
        return installed, backups

    def _repair_blocking(
        self, candidates: Sequence[Candidate], origin: Origin, screen: Screen
    ) -> dict[str, LoadedModel]:
        """Install into slots nothing could serve: validated against the slot's contract alone,
        nothing backed up (there is no model that served), nothing published."""
        for candidate in candidates:
            if candidate.slot not in self.unservable:
                raise ModelError(f"slot {candidate.slot!r} is not loaded (another slot is broken)")
            check_file(candidate.path)
        now = self._clock()
        installed = {}
        with self.write_lock():
            transaction = Transaction(self.layout)
            try:
                for candidate in candidates:
                    final = self._slot_path(candidate.slot)
                    staged = transaction.stage_copy(candidate.path, suffix=".onnx")
                    model = self._brain.load_model(
                        candidate.slot,
                        staged,
                        serving=None,
                        version=candidate.version,
                        installed_at=final,
                        alongside={},
                    )
                    screen(model.sha256)
                    transaction.place(staged, final, model.sha256)
                    transaction.place_provenance(
                        origin,
                        candidate.slot,
                        final,
                        sha256=model.sha256,
                        version=model.version,
                        at=now,
                    )
                    installed[candidate.slot] = model
                transaction.apply()
                transaction.commit()
            except BaseException:
                transaction.abort()
                raise
        for slot in installed:
            self.unservable.pop(slot, None)
        return installed

    def _catch_up(self, slots: Sequence[str]) -> BrainSnapshot:
        """Serve what another process installed since this one last looked (under the lock).

        What is on disk is what this install replaces: it is the model to back up and the
        signature to stay compatible with, not what this process happened to load earlier.
        """
        current = self._brain.snapshot
        fresh = {}
        for slot in slots:
            serving = current.models[slot]
            try:
                if serving.fallback_reason or FileIdentity.of(serving.path) == serving.identity:
                    continue
                fresh[slot] = self._load_on_disk(serving)
            except (AppError, OSError):
                continue  # not a model that can serve: it will not be backed up either
        if fresh:
            logger.info(
                f"🔄 [MODEL-RELOAD] Caught up with models installed meanwhile: {list(fresh)}"
            )
            return self._brain.publish(fresh)
        return current

    def _stage_and_validate(
        self,
        transaction: Transaction,
        candidates: Sequence[Candidate],
        current: BrainSnapshot,
        screen: Screen,
    ) -> dict[str, LoadedModel]:
        """Validated models for the candidates that differ from what already serves."""
        prepared = {}
        for candidate in candidates:
            trusted = self.layout.is_private(candidate.path)
            staged = (
                transaction.stage_move(candidate.path, suffix=".onnx")
                if trusted
                else transaction.stage_copy(candidate.path, suffix=".onnx")
            )
            flushed = _FLUSHING.submit(transaction.make_durable, staged)
            serving = current.models[candidate.slot]
            try:
                model = self._brain.load_model(
                    candidate.slot,
                    staged,
                    serving=serving,
                    version=candidate.version,
                    installed_at=serving.path,
                    known_sha256=candidate.sha256 if trusted else None,
                )
            except ModelError as error:  # named by the file offered, not our staged copy
                said = str(error).replace(str(staged), str(candidate.path))
                raise type(error)(said.replace(staged.name, candidate.path.name)) from None
            finally:
                flushed.result()
            screen(model.sha256)  # the hash, now known for certain
            if model.sha256 == serving.sha256 and self._active_is_serving(serving):
                logger.info(f"✅ [MODEL-RELOAD] {candidate.slot} already serves this model")
                continue
            transaction.place(staged, serving.path, model.sha256)
            prepared[candidate.slot] = model
        return prepared

    def _plan(
        self,
        transaction: Transaction,
        prepared: Mapping[str, LoadedModel],
        current: BrainSnapshot,
        origin: Origin,
        other_files: Sequence[OtherFile],
    ) -> dict[str, Path]:
        """Plan the backups, provenance records and other files; the backups by slot."""
        now = self._clock()
        backups = {}
        taken: list[str] = self.shelf.names()
        for slot, model in prepared.items():
            serving = current.models[slot]
            if self._worth_a_backup(serving):
                name = next_backup_name(slot, now, taken)
                taken.append(name)
                backup = self.layout.backup_dir / name
                if _shared(serving.path):
                    # A link, or a file with other names (the user's `ln`): its bytes may be
                    # rewritten through them, so the backup gets bytes of its own.
                    copy = transaction.stage_copy(serving.path, suffix=".onnx")
                    transaction.place(copy, backup, serving.sha256)
                else:
                    transaction.back_up(serving.path, backup)
                self._record_backup(transaction, serving, name, now)
                backups[slot] = backup
                logger.info(f"💾 [MODEL-RELOAD] Backup created: {backup}")
            transaction.place_provenance(
                origin, slot, serving.path, sha256=model.sha256, version=model.version, at=now
            )
        for source, final in other_files:
            transaction.place(transaction.stage_copy(source, suffix=final.suffix), final)
        return backups

    async def keep_a_backup(self, slot: str) -> Path | None:
        """Make sure a backup holds the model serving `slot` (the lifecycle's champion), so
        that a file copied over the active one by hand cannot take the last copy of it.

        The backup is a copy of its own (never a second name of the active file). None when
        the file on disk is not the serving model (it changed meanwhile, or was refused).
        """
        async with self._lock:
            return await asyncio.to_thread(self._keep_blocking, slot)

    def _keep_blocking(self, slot: str) -> Path | None:
        serving = self._brain.snapshot.models[slot]
        found = self.shelf.holding(slot, serving.sha256)
        if found is not None or not self._active_is_serving(serving):
            return found
        with self.write_lock():
            now = self._clock()
            name = next_backup_name(slot, now, self.shelf.names())
            backup = self.layout.backup_dir / name
            transaction = Transaction(self.layout)
            try:
                copy = transaction.stage_copy(serving.path, suffix=".onnx")
                transaction.place(copy, backup, serving.sha256)
                self._record_backup(transaction, serving, name, now)
                transaction.apply()
                transaction.commit()
            except BaseException:
                transaction.abort()
                raise
        logger.info(f"💾 [MODEL-RELOAD] Backup created of the champion {serving.version}: {backup}")
        return backup

    def _worth_a_backup(self, serving: LoadedModel) -> bool:
        """The model being replaced is backed up when it really served, the shelf has no copy
        of it yet, and it is not quarantined: a backup nothing may restore, or a second copy,
        would only push a useful one out of ``models.backup_retention``."""
        if not self._active_is_serving(serving):
            return False
        if self.shelf.recorded(serving.slot, serving.sha256) is not None:
            return False
        return self.quarantine.holds(serving.sha256) is None

    def _record_backup(
        self, transaction: Transaction, serving: LoadedModel, name: str, now: datetime
    ) -> None:
        """Plan the record of backup `name`: the SHA-256 and provenance of the model in it."""
        record = BackupRecord(
            name=name,
            slot=serving.slot,
            sha256=serving.sha256,
            version=serving.version,
            taken_at=now,
            provenance=self.provenance_of(serving),
        )
        transaction.place_record(record, self.layout.backup_record_file(name))

    def provenance_of(self, model: LoadedModel) -> Provenance | None:
        """Where `model` came from, while it is the one its slot's provenance names."""
        provenance = self.records.provenance(model.slot)
        return provenance if provenance is not None and provenance.sha256 == model.sha256 else None

    @staticmethod
    def _active_is_serving(serving: LoadedModel) -> bool:
        """True when the slot's file on disk holds the model that serves (worth a backup)."""
        if serving.fallback_reason is not None:
            return False  # the active file is the one that was refused
        try:
            if FileIdentity.of(serving.path) == serving.identity:
                return True
            return sha256_of_file(serving.path) == serving.sha256
        except FileNotFoundError:
            return False

    def _tell(self, event: SwapEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as error:
                logger.warning(f"⚠️ [MODEL-RELOAD] A swap listener failed: {error}")

    # -- backups and rollback ------------------------------------------------------------

    def backups(self, slot: str | None = None) -> list[Path]:
        """Backups of `slot` (default: the decision slot), newest first."""
        return self.shelf.of(slot or self._settings.brain.decision_slot)

    async def rollback(
        self,
        slot: str | None = None,
        backup: str | None = None,
        *,
        source: Source = "rollback",
        replacing: str | None = None,
    ) -> SwapResult:
        """Restore a backup through the same validated path as any install.

        Default: the newest intact backup that differs from the serving model, is not
        quarantined and passes validation; the others are skipped with a log line. A backup
        named by `backup` that is quarantined is refused, saying why. `source`: ``lifecycle``
        when the canary judge rolls back (it sends its own alert); `replacing`: the SHA-256
        the slot must still hold (see :meth:`swap_in`).
        """
        chosen = slot or self._settings.brain.decision_slot
        if chosen not in self._settings.brain.slots:
            known = ", ".join(self._settings.brain.slots)
            return SwapResult(ok=False, reason=f"unknown slot {chosen!r} (slots: {known})")
        serving = self._brain.snapshot.models[chosen] if self._brain.loaded else None
        choices = await asyncio.to_thread(self.shelf.choices, chosen, backup, serving)
        if isinstance(choices, str):
            return SwapResult(ok=False, reason=choices)
        passed_over = ""
        if backup is None:
            try:
                allowed = await asyncio.to_thread(self._not_quarantined, choices)
            except QuarantineUnreadable as error:
                return SwapResult(ok=False, reason=str(error), error=error)
            if len(allowed) < len(choices):
                passed_over = f" ({len(choices) - len(allowed)} quarantined passed over)"
            choices = allowed
        for path, candidate_sha, record in choices:
            origin = (
                record.provenance.origin
                if record is not None and record.provenance is not None
                else Origin(source="rollback", artifact_name=path.name)
            )
            origin = origin.model_copy(update={"source": source})
            version = record.version if record is not None else None
            result = await self.swap_in(
                [Candidate(chosen, path, version, candidate_sha)],
                origin=origin,
                replacing=None if replacing is None else {chosen: replacing},
            )
            if result.ok or result.retryable or backup is not None:
                return result
            logger.warning(f"⚠️ [MODEL-RELOAD] Backup {path.name} cannot serve; trying an older one")
        return SwapResult(
            ok=False,
            reason=(
                f"slot {chosen!r} has no valid backup that differs from the serving model"
                + passed_over
            ),
        )

    def _not_quarantined(self, choices: Sequence[RollbackChoice]) -> list[RollbackChoice]:
        """A default rollback's choices but the quarantined ones, each skipped with a log line."""
        quarantined = {entry.sha256: entry for entry in self.quarantine.entries()}
        allowed = []
        for choice in choices:
            path, sha256, _ = choice
            entry = quarantined.get(sha256)
            if entry is None:
                allowed.append(choice)
                continue
            logger.warning(
                f"⚠️ [MODEL-RELOAD] Passing over backup {path.name}: quarantined since "
                f"{entry.since} ({entry.why})"
            )
        return allowed

    # -- models installed by others ------------------------------------------------------

    def disk_differences(self) -> dict[str, str]:
        """Slots whose file on disk is not the model serving, and why (blocking)."""
        differences = {}
        for slot, model in self._brain.snapshot.models.items():
            if model.fallback_reason is not None:
                differences[slot] = model.fallback_reason
                continue
            try:
                if FileIdentity.of(model.path) != model.identity:
                    refused = self._refused.get(slot) == FileIdentity.of(model.path)
                    how = "refused" if refused else "not loaded yet"
                    differences[slot] = (
                        f"the file on disk is not the model serving ({model.path}: {how})"
                    )
            except FileNotFoundError:
                differences[slot] = f"{model.path} is missing"
        return differences

    async def refresh_from_disk(self) -> list[str]:
        """Load slots whose file another process replaced; returns the slots swapped.

        A file that is refused is remembered by its identity and not tried again until it
        changes.
        """
        async with self._lock:
            changed = await asyncio.to_thread(self._changed_slots)
            if not changed:
                return []
            fresh = {}
            for slot, identity in changed.items():
                try:
                    fresh[slot] = await asyncio.to_thread(self._load_from_disk, slot)
                except (AppError, OSError) as error:
                    self._refused[slot] = identity
                    logger.error(
                        f"❌ [MODEL-RELOAD] Model file changed on disk but refused: {error}"
                    )
                    result = SwapResult(ok=False, reason=str(error), error=error)
                    self._tell(SwapEvent("refused", result, "disk", (slot,)))
            if not fresh:
                return []
            self._brain.publish(fresh)
        for slot, model in fresh.items():
            self._refused.pop(slot, None)
            logger.info(
                f"✅ [MODEL-RELOAD] Model reloaded from disk: {slot} version {model.version}"
            )
        result = SwapResult(ok=True, reason="refreshed from disk", installed=fresh)
        self._tell(SwapEvent("refreshed", result, "disk", tuple(fresh)))
        return list(fresh)

    def _changed_slots(self) -> dict[str, FileIdentity]:
        changed = {}
        for slot, model in self._brain.snapshot.models.items():
            try:
                identity = FileIdentity.of(model.path)
            except FileNotFoundError:
                continue  # someone's mistake: keep serving, load nothing
            if identity != model.identity and identity != self._refused.get(slot):
                changed[slot] = identity
        return changed

    def _load_from_disk(self, slot: str) -> LoadedModel:
        return self._load_on_disk(self._brain.snapshot.models[slot])

    def _load_on_disk(self, serving: LoadedModel) -> LoadedModel:
        """The model another process put at `serving`'s path, validated; refused if quarantined."""
        model = self._brain.load_model(serving.slot, serving.path, serving=serving)
        self.quarantine.check(model.sha256)
        return model


def _shared(path: Path) -> bool:
    """True for a symbolic link, or a file that has other names than this one."""
    stat = path.lstat()
    return path.is_symlink() or stat.st_nlink > 1


def _screen_known(candidates: Sequence[Candidate], screen: Screen) -> None:
    """Refuse, before anything is staged, a candidate whose caller gave a screened SHA-256."""
    for candidate in candidates:
        if candidate.sha256 is not None:
            screen(candidate.sha256)


def _check_candidates(candidates: Sequence[Candidate], current: BrainSnapshot) -> None:
    if not candidates:
        raise ModelError("nothing to install")
    if len({c.slot for c in candidates}) != len(candidates):
        raise ModelError("two candidates for the same slot")
    for candidate in candidates:
        if candidate.slot not in current.models:
            raise ModelError(f"unknown slot {candidate.slot!r}")
        check_file(candidate.path)
