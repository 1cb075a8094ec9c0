"""The trading brain: decides from one immutable snapshot of its slots, and hot-swaps them.

A reload (seed: ``ReloadModelsAsync``) stages the candidate, builds and validates its session in
worker threads, backs up the serving file, installs the candidate atomically and then replaces
one reference. Decisions read that reference once, so they never wait for a reload, never fail
because of one, and never mix model versions. Any failure leaves the old model serving and the
disk as it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from loguru import logger

from app.brain.decision import Decision, choose_action
from app.brain.models import (
    BrainSnapshot,
    Candidate,
    LoadedModel,
    SwapEvent,
    SwapResult,
    version_label,
)
from app.brain.runtime import FileIdentity
from app.brain.store import ModelStore, PlannedInstall
from app.brain.validation import SlotContract, check_file, validate_model
from app.errors import AppError, ModelError, ModelsDirectoryLocked
from app.fsutil import sha256_of_file
from app.settings import BrainSettings

# Hashing and flushing a candidate run beside its session construction (all release the GIL).
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-io")

_FLOAT32 = np.dtype(np.float32)

SwapListener = Callable[[SwapEvent], None]
DecisionObserver = Callable[[str, float], None]


class MemoryGuard(Protocol):
    """Refuses a candidate that would not fit beside the models already loaded."""

    def check_room(self, slot: str, candidate_bytes: int, loaded: Mapping[str, int]) -> None: ...


class TradingBrain:
    """Named model slots, a decision function, and validated hot swaps."""

    def __init__(
        self,
        settings: BrainSettings,
        store: ModelStore,
        *,
        backup_retention: int = 5,
        memory_guard: MemoryGuard | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recent_features: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        self._settings = settings
        # Recent real feature rows (the decision journal's), for validation's warm-up.
        self._recent_features = recent_features
        self._store = store
        self._retention = backup_retention
        self._memory_guard = memory_guard
        self._clock = clock
        self._snapshot: BrainSnapshot | None = None
        self._reload_lock = asyncio.Lock()
        self._listeners: list[SwapListener] = []
        self._decision_observer: DecisionObserver | None = None
        self._row_shape = (1, len(settings.features))
        self._threshold = settings.confidence_threshold

    # -- wiring --------------------------------------------------------------------------

    @property
    def store(self) -> ModelStore:
        return self._store

    @property
    def settings(self) -> BrainSettings:
        return self._settings

    def add_listener(self, listener: SwapListener) -> None:
        """Call `listener` after every reload attempt; it must not block or raise."""
        self._listeners.append(listener)

    def observe_decisions(self, observer: DecisionObserver | None) -> None:
        """Call `observer(action, seconds)` after every decision (metrics)."""
        self._decision_observer = observer

    @property
    def snapshot(self) -> BrainSnapshot:
        if self._snapshot is None:
            raise ModelError("the brain has not loaded its models yet (call start())")
        return self._snapshot

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    # -- start-up ------------------------------------------------------------------------

    async def start(self, *, recover: bool = True) -> BrainSnapshot:
        """Undo any interrupted install (unless read-only), then load and validate every slot."""
        if self._snapshot is not None:
            return self._snapshot
        self._snapshot = await asyncio.to_thread(self._start_blocking, recover)
        for slot, model in self._snapshot.models.items():
            logger.info(
                f"✅ [MODEL-RELOAD] Serving {slot} version {model.version} from {model.path}"
            )
        return self._snapshot

    def _start_blocking(self, recover: bool) -> BrainSnapshot:
        if recover:
            with self._store.write_lock():
                self._store.recover_interrupted_install()
                self._store.clear_staging()
        models: dict[str, LoadedModel] = {}
        for slot, slot_settings in self._settings.slots.items():
            path = self._store.path_of(slot_settings.path)
            try:
                models[slot] = self._load(slot, path, serving=None, version=None, alongside=models)
            except ModelError as error:
                raise ModelError(f"slot {slot!r} cannot start from {path}: {error}") from None
        return BrainSnapshot.of(models, self._settings.decision_slot)

    def _contract(self, slot: str, serving: LoadedModel | None) -> SlotContract:
        width = len(self._settings.features) if slot == self._settings.decision_slot else None
        return SlotContract(
            slot=slot,
            serving=None if serving is None else serving.signature,
            decision_features=width,
        )

    def _load(
        self,
        slot: str,
        path: Path,
        *,
        serving: LoadedModel | None,
        version: str | None,
        installed_at: Path | None = None,
        known_sha256: str | None = None,
        alongside: Mapping[str, LoadedModel] | None = None,
    ) -> LoadedModel:
        """Validate `path` for `slot`; hashing (unless known) runs beside session construction.

        `alongside`: the models loaded so far at start-up (else the serving snapshot's), which
        the memory guard counts as already in memory.
        """
        check_file(path)
        if self._memory_guard is not None:
            loaded = alongside if alongside is not None else self.snapshot.models
            self._memory_guard.check_room(
                slot, path.stat().st_size, {s: m.size_bytes for s, m in loaded.items()}
            )
        final = installed_at or path
        trusted = known_sha256 if known_sha256 and self._store.owns(path) else None
        digest = None if trusted else _HASHING.submit(sha256_of_file, path)
        try:
            validated = validate_model(
                path,
                self._contract(slot, serving),
                intra_op_threads=self._settings.intra_op_threads,
                inter_op_threads=self._settings.inter_op_threads,
                warmup_rows=self._warmup_rows(slot),
            )
        finally:
            # Also waits on failure: no thread outlives the file.
            sha256 = digest.result() if digest is not None else trusted
        assert sha256 is not None
        return LoadedModel(
            slot=slot,
            path=final,
            sha256=sha256,
            version=version_label(sha256, version, validated.declared_version),
            size_bytes=path.stat().st_size,
            signature=validated.signature,
            identity=FileIdentity.of(path),
            session=validated.session,
        )

    def _warmup_rows(self, slot: str) -> np.ndarray | None:
        if self._recent_features is None or slot != self._settings.decision_slot:
            return None
        return self._recent_features()

    # -- decisions -----------------------------------------------------------------------

    def decide(self, features: Sequence[float] | np.ndarray[Any, Any]) -> Decision:
        """One decision from the current snapshot; hold below the confidence threshold."""
        # The hot path, measured against a bare session.run by benchmarks/swap_under_load.py:
        # every line here costs a visible fraction of a 5 µs model run.
        observer = self._decision_observer
        started = time.perf_counter() if observer is not None else 0.0
        snapshot = self._snapshot  # read once: the whole decision uses these versions
        if snapshot is None:
            raise ModelError("the brain has not loaded its models yet (call start())")
        row = (
            features
            if type(features) is np.ndarray and features.dtype is _FLOAT32
            else np.asarray(features, dtype=np.float32)
        )
        if row.shape != self._row_shape:
            row = row.reshape(1, -1)
            if row.shape != self._row_shape:
                raise ValueError(f"expected {self._row_shape[1]} features, got {row.shape[1]}")
        feed = snapshot.decision
        probabilities = feed.session.run(feed.output_names, {feed.input_name: row})[0].tolist()[0]
        action, confidence = choose_action(probabilities, self._threshold)
        decision = Decision(action, confidence, tuple(probabilities), snapshot.versions)
        if observer is not None:
            observer(action, time.perf_counter() - started)
        return decision

    # -- reloads -------------------------------------------------------------------------

    async def reload_models(
        self, path: str | Path, slot: str | None = None, *, version: str | None = None
    ) -> bool:
        """The seed's ReloadModelsAsync: True when `path` now serves `slot` (default slot)."""
        chosen = slot or self._settings.decision_slot
        result = await self.swap_in([Candidate(chosen, Path(path), version)])
        return result.ok

    async def swap_in(self, candidates: Sequence[Candidate], *, source: str = "cli") -> SwapResult:
        """Validate, back up, install and swap a set of models, all or nothing."""
        slots = tuple(candidate.slot for candidate in candidates)
        offered = {candidate.slot: candidate.path for candidate in candidates}
        for candidate in candidates:
            logger.info(f"🔄 [MODEL-RELOAD] Starting model reload: {candidate.path}")
        async with self._reload_lock:
            started = time.perf_counter()
            try:
                installed, backups = await asyncio.to_thread(self._swap_blocking, candidates)
            except AppError as error:
                result = SwapResult(
                    ok=False,
                    reason=str(error),
                    retryable=isinstance(error, ModelsDirectoryLocked),
                    seconds=time.perf_counter() - started,
                )
                logger.error(f"❌ [MODEL-RELOAD] Model reload refused: {error}")
                self._tell(SwapEvent("refused", result, source, slots, offered))
                return result
            except Exception as error:
                reason = f"unexpected {type(error).__name__}: {error}"
                result = SwapResult(
                    ok=False, reason=reason, retryable=True, seconds=time.perf_counter() - started
                )
                logger.opt(exception=error).error(
                    f"❌ [MODEL-RELOAD] Model reload failed: {reason}"
                )
                self._tell(SwapEvent("refused", result, source, slots, offered))
                return result
        reason = "installed" if installed else "already serving"
        result = SwapResult(
            ok=True,
            reason=reason,
            installed=installed,
            backups=backups,
            seconds=time.perf_counter() - started,
        )
        for slot, model in installed.items():
            logger.info(
                f"✅ [MODEL-RELOAD] Model reloaded successfully: {slot} version {model.version}"
            )
        if installed:
            kind = "rolled_back" if source == "rollback" else "installed"
            self._tell(SwapEvent(kind, result, source, slots, offered))
        return result

    def _swap_blocking(
        self, candidates: Sequence[Candidate]
    ) -> tuple[dict[str, LoadedModel], dict[str, Path]]:
        current = self.snapshot
        _check_candidates(candidates, current)
        lock = self._store.acquire_write_lock()
        staged: dict[str, Path] = {}
        backups: dict[str, Path] = {}
        plan: list[PlannedInstall] = []
        try:
            prepared = self._stage_and_validate(candidates, current, staged)
            if not prepared:
                return {}, {}
            plan = self._back_up(prepared, current, staged, backups)
            self._store.install(plan)
            installed = {
                slot: dataclasses.replace(model, identity=FileIdentity.of(model.path))
                for slot, model in prepared.items()
            }
            self._swap(installed)
            self._store.commit()
        except BaseException:
            self._undo(plan, backups)
            raise
        finally:
            for path in staged.values():
                self._store.discard(path)
            lock.release()
        for slot in installed:
            self._store.prune_backups(slot, self._retention)
        return installed, backups

    def _stage_and_validate(
        self, candidates: Sequence[Candidate], current: BrainSnapshot, staged: dict[str, Path]
    ) -> dict[str, LoadedModel]:
        """Validated models for the candidates that differ from what already serves."""
        prepared = {}
        for candidate in candidates:
            staged[candidate.slot] = self._store.stage(candidate.path)
            # Flushing the staged copy to disk overlaps validation; it is needed only by install.
            durable = _HASHING.submit(self._store.make_durable, staged[candidate.slot])
            serving = current.models[candidate.slot]
            try:
                model = self._load(
                    candidate.slot,
                    staged[candidate.slot],
                    serving=serving,
                    version=candidate.version,
                    installed_at=serving.path,
                    known_sha256=candidate.sha256,
                )
            finally:
                durable.result()
            if model.sha256 == serving.sha256:
                logger.info(f"✅ [MODEL-RELOAD] {candidate.slot} already serves this model")
                continue
            prepared[candidate.slot] = model
        return prepared

    def _back_up(
        self,
        prepared: Mapping[str, LoadedModel],
        current: BrainSnapshot,
        staged: Mapping[str, Path],
        backups: dict[str, Path],
    ) -> list[PlannedInstall]:
        """Back up every file about to be replaced; the install plan that follows."""
        now = self._clock()
        plan = []
        for slot, model in prepared.items():
            serving = current.models[slot]
            backup = None
            if serving.path.exists():
                backup = self._store.create_backup(slot, serving.path, now)
                backups[slot] = backup
                logger.info(f"💾 [MODEL-RELOAD] Backup created: {backup}")
            plan.append(PlannedInstall(staged[slot], serving.path, backup, model.sha256))
        return plan

    def _swap(self, installed: Mapping[str, LoadedModel]) -> None:
        """The single reference replacement that makes the new models serve."""
        self._snapshot = self.snapshot.replacing(installed)

    def _undo(self, plan: Sequence[PlannedInstall], backups: Mapping[str, Path]) -> None:
        if plan:
            self._store.roll_back(plan)
        for backup in backups.values():
            backup.unlink(missing_ok=True)

    def _tell(self, event: SwapEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as error:
                logger.warning(f"⚠️ [MODEL-RELOAD] A swap listener failed: {error}")

    # -- rollback and outside changes ------------------------------------------------------

    def backups(self, slot: str | None = None) -> list[Path]:
        return self._store.backups(slot or self._settings.decision_slot)

    def backup_to_restore(self, slot: str, name: str | None = None) -> Path:
        """The named backup, or the newest one that differs from the serving model."""
        backups = self._store.backups(slot)
        if name is not None:
            for backup in backups:
                if name in {backup.name, str(backup)}:
                    return backup
            raise ModelError(f"no backup {name!r} for slot {slot!r}")
        serving = self.snapshot.models[slot].sha256
        for backup in backups:
            if sha256_of_file(backup) != serving:
                return backup
        raise ModelError(f"slot {slot!r} has no backup that differs from the serving model")

    async def rollback(self, slot: str | None = None, backup: str | None = None) -> SwapResult:
        """Restore a backup through the same validated path as any install."""
        chosen = slot or self._settings.decision_slot
        try:
            path = await asyncio.to_thread(self.backup_to_restore, chosen, backup)
        except ModelError as error:
            return SwapResult(ok=False, reason=str(error))
        return await self.swap_in([Candidate(chosen, path)], source="rollback")

    async def refresh_from_disk(self) -> list[str]:
        """Load slots whose file another process replaced; returns the slots swapped."""
        async with self._reload_lock:
            changed = await asyncio.to_thread(self._changed_slots)
            if not changed:
                return []
            try:
                fresh = await asyncio.to_thread(self._load_changed, changed)
            except AppError as error:
                logger.error(f"❌ [MODEL-RELOAD] Model file changed on disk but refused: {error}")
                return []
            self._swap(fresh)
        for slot, model in fresh.items():
            logger.info(
                f"✅ [MODEL-RELOAD] Model reloaded from disk: {slot} version {model.version}"
            )
        result = SwapResult(ok=True, reason="refreshed from disk", installed=fresh)
        self._tell(SwapEvent("refreshed", result, "disk", tuple(fresh)))
        return list(fresh)

    def disk_differences(self) -> dict[str, str]:
        """Slots whose file on disk is not the model serving: "replaced" or "missing" (blocking)."""
        differences = {}
        for slot, model in self.snapshot.models.items():
            try:
                if FileIdentity.of(model.path) != model.identity:
                    differences[slot] = "replaced"
            except FileNotFoundError:
                differences[slot] = "missing"
        return differences

    def _changed_slots(self) -> list[str]:
        # A replace is atomic; a missing file is someone's mistake: keep serving, load nothing.
        return [slot for slot, how in self.disk_differences().items() if how == "replaced"]

    def _load_changed(self, slots: Sequence[str]) -> dict[str, LoadedModel]:
        current = self.snapshot
        return {
            slot: self._load(
                slot, current.models[slot].path, serving=current.models[slot], version=None
            )
            for slot in slots
        }


def _check_candidates(candidates: Sequence[Candidate], current: BrainSnapshot) -> None:
    if not candidates:
        raise ModelError("nothing to install")
    if len({c.slot for c in candidates}) != len(candidates):
        raise ModelError("two candidates for the same slot")
    for candidate in candidates:
        if candidate.slot not in current.models:
            raise ModelError(f"unknown slot {candidate.slot!r}")
        check_file(candidate.path)
