"""The trading brain: decides from one immutable snapshot of its slots; validates and serves.

The brain writes nothing. It builds and validates a model's session (:meth:`load_model`,
blocking: callers run it in a worker thread) and publishes a new snapshot by replacing one
reference (:meth:`publish`). Decisions read that reference once, so they never wait for a
reload, never fail because of one, and never mix model versions. Installing files is the
install transaction's job (``app/install``), which calls these public methods; the seed's
``ReloadModelsAsync`` (:meth:`reload_models`) is handed over to it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from loguru import logger

from app.brain.budget import Budget, Validations
from app.brain.decision import Decision, choose_action, held
from app.brain.models import BrainSnapshot, DecisionFeed, LoadedModel, version_label
from app.brain.runtime import FileIdentity
from app.brain.validation import SlotContract, check_file, validate_model
from app.errors import ModelError
from app.fsutil import sha256_of_file
from app.settings import BrainSettings

# Hashing a candidate runs beside its session construction (both release the GIL).
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-io")
# Decisions by a model too slow to run on the event loop, one at a time, in order.
_DECIDING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decide")
# Probabilities sum to 1; validation allows 1e-3 of rounding, and so does every decision.
_SUM_LOW, _SUM_HIGH = 1 - 1e-3, 1 + 1e-3

_FLOAT32 = np.dtype(np.float32)

DecisionObserver = Callable[[str, float], None]
InvalidOutputObserver = Callable[[str, str, str], None]  # slot, version, why


class MemoryGuard(Protocol):
    """Refuses a candidate that would not fit beside the models already loaded."""

    def check_room(self, slot: str, candidate_bytes: int, loaded: Mapping[str, int]) -> None: ...


class Reloader(Protocol):
    """What installs models for the brain (the install transaction)."""

    async def reload(self, path: Path, slot: str, version: str | None) -> bool: ...

    def recorded_version(self, slot: str, sha256: str) -> str | None: ...


class TradingBrain:
    """Named model slots, a decision function, and validation of models offered to them."""

    def __init__(
        self,
        settings: BrainSettings,
        *,
        memory_guard: MemoryGuard | None = None,
        recent_features: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        self._settings = settings
        # Recent real feature rows (the decision journal's), for validation's warm-up.
        self._recent_features = recent_features
        self._memory_guard = memory_guard
        self._snapshot: BrainSnapshot | None = None
        self._reloader: Reloader | None = None
        self._decision_observer: DecisionObserver | None = None
        self._invalid_observer: InvalidOutputObserver | None = None
        self._row_shape = (1, len(settings.features))
        self._threshold = settings.confidence_threshold
        self._inline_seconds = settings.inline_decision_ms / 1e3
        self._budget = Budget(
            timeout_seconds=settings.validation_timeout_seconds,
            max_decision_seconds=settings.max_decision_ms / 1e3,
        )
        self._validations = Validations()
        self._unhealthy: dict[str, str] = {}  # slot -> why its serving model's output is bad
        self._slow: set[str] = set()  # models (by SHA-256) that decide in a worker thread

    # -- wiring --------------------------------------------------------------------------

    @property
    def settings(self) -> BrainSettings:
        return self._settings

    def attach_reloader(self, reloader: Reloader) -> None:
        """The component that installs models (and remembers their versions) for this brain."""
        self._reloader = reloader

    def observe_decisions(self, observer: DecisionObserver | None) -> None:
        """Call `observer(action, seconds)` after every decision (metrics)."""
        self._decision_observer = observer

    def observe_invalid_outputs(self, observer: InvalidOutputObserver | None) -> None:
        """Call `observer(slot, version, why)` for every decision a bad output turned to hold."""
        self._invalid_observer = observer

    @property
    def unhealthy(self) -> Mapping[str, str]:
        """Slots whose serving model gave an output that cannot be a decision, and why."""
        return dict(self._unhealthy)

    def stop_validations(self) -> None:
        """Stop every validation in flight (and refuse new ones): the host is stopping."""
        self._validations.stop_all()

    @property
    def snapshot(self) -> BrainSnapshot:
        if self._snapshot is None:
            raise ModelError("the brain has not loaded its models yet (call start())")
        return self._snapshot

    @property
    def loaded(self) -> bool:
        return self._snapshot is not None

    # -- validating and publishing ---------------------------------------------------------

    def contract(self, slot: str, serving: LoadedModel | None) -> SlotContract:
        width = len(self._settings.features) if slot == self._settings.decision_slot else None
        return SlotContract(
            slot=slot,
            serving=None if serving is None else serving.signature,
            decision_features=width,
        )

    def load_model(
        self,
        slot: str,
        path: Path,
        *,
        serving: LoadedModel | None,
        version: str | None = None,
        installed_at: Path | None = None,
        known_sha256: str | None = None,
        alongside: Mapping[str, LoadedModel] | None = None,
    ) -> LoadedModel:
        """Validate `path` for `slot` and warm it up (blocking); ModelError says why not.

        The version is the one given (the producer's), else the one recorded when this very
        model was installed, else the model's own metadata, else its hash (``version_label``).
        `known_sha256` is the caller's hash of these bytes (else they are hashed beside the
        session's construction). `alongside`: the models loaded so far at start-up (else the
        serving snapshot's), which the memory guard counts as already in memory.
        """
        check_file(path)
        identity = FileIdentity.of(path)  # before: a file replaced meanwhile is loaded again
        if self._memory_guard is not None:
            loaded = alongside if alongside is not None else self.snapshot.models
            self._memory_guard.check_room(
                slot, path.stat().st_size, {s: m.size_bytes for s, m in loaded.items()}
            )
        digest = None if known_sha256 else _HASHING.submit(sha256_of_file, path)
        try:
            validated = validate_model(
                path,
                self.contract(slot, serving),
                intra_op_threads=self._settings.intra_op_threads,
                inter_op_threads=self._settings.inter_op_threads,
                budget=self._budget,
                validations=self._validations,
                warmup_rows=self._warmup_rows(slot),
            )
        finally:
            # Also waits on failure: no thread outlives the file.
            sha256 = digest.result() if digest is not None else known_sha256
        assert sha256 is not None
        recorded = self._reloader.recorded_version(slot, sha256) if self._reloader else None
        return LoadedModel(
            slot=slot,
            path=installed_at or path,
            sha256=sha256,
            version=version_label(sha256, version, recorded, validated.declared_version),
            size_bytes=path.stat().st_size,
            signature=validated.signature,
            identity=identity,
            session=validated.session,
            decision_seconds=validated.decision_seconds,
        )

    def publish(self, models: Mapping[str, LoadedModel]) -> BrainSnapshot:
        """Serve `models` from now on: one reference replaced (the first call needs all slots)."""
        current = self._snapshot
        if current is None:
            snapshot = BrainSnapshot.of(models, self._settings.decision_slot)
        else:
            snapshot = current.replacing(models)
        self._snapshot = snapshot
        for slot in models:
            if (
                slot != snapshot.decision_slot
                or current is None
                or (snapshot.deciding is not current.deciding)
            ):
                self._unhealthy.pop(slot, None)
        return snapshot

    def pin(self, model: LoadedModel | None) -> BrainSnapshot:
        """Decide with `model` (the lifecycle's champion or incumbent) rather than the decision
        slot's installed model, from the next decision on; None: the installed model again."""
        current = self.snapshot
        snapshot = current.pinning(model)
        self._snapshot = snapshot
        if snapshot.deciding is not current.deciding:
            self._unhealthy.pop(snapshot.decision_slot, None)  # about the model that decided
        return snapshot

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
        decision = self._run(snapshot.decision, self._row(features), snapshot.versions)
        if isinstance(decision, str):
            return self._invalid(snapshot.decision.model, decision, snapshot.versions)
        if observer is not None:
            observer(decision.action, time.perf_counter() - started)
        return decision

    def decide_with(
        self, model: LoadedModel, features: Sequence[float] | np.ndarray[Any, Any]
    ) -> Decision:
        """What `model` (one not serving: a shadow) decides on `features`, exactly as
        :meth:`decide` would; an invalid output is a hold with ``valid`` False, and marks
        nothing unhealthy."""
        versions = {**self.snapshot.versions, model.slot: model.version}
        decision = self._run(DecisionFeed.of(model), self._row(features), versions)
        return held(versions) if isinstance(decision, str) else decision

    async def decide_with_async(
        self, model: LoadedModel, features: Sequence[float] | np.ndarray[Any, Any]
    ) -> Decision:
        """:meth:`decide_with`, in the decision worker thread when `model` is slow."""
        measured = model.decision_seconds
        if measured is not None and measured > self._inline_seconds:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(_DECIDING, self.decide_with, model, features)
        return self.decide_with(model, features)

    def _row(self, features: Sequence[float] | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        row = (
            features
            if type(features) is np.ndarray and features.dtype is _FLOAT32
            else np.asarray(features, dtype=np.float32)
        )
        if row.shape != self._row_shape:
            row = row.reshape(1, -1)
            if row.shape != self._row_shape:
                raise ValueError(f"expected {self._row_shape[1]} features, got {row.shape[1]}")
        return row

    def _run(
        self, feed: DecisionFeed, row: np.ndarray[Any, Any], versions: Mapping[str, str]
    ) -> Decision | str:
        """The decision `feed`'s model makes on `row`, or why its output cannot be one."""
        output = feed.session.run(feed.output_names, {feed.input_name: row})[0]
        # Unpacking checks the shape ([1, 3]), and one comparison of the sum checks that it is
        # a distribution (NaN and infinities fail it too): cheaper than asking numpy, and free
        # when all is well.
        try:
            (probabilities,) = output.tolist()
            sell, hold, buy = probabilities
            total = sell + hold + buy
        except (ValueError, TypeError, AttributeError):
            shape = list(getattr(output, "shape", ()))
            return f"output shape {shape}, expected [1, 3]"
        if not _SUM_LOW < total < _SUM_HIGH:
            return f"output {probabilities} is not a distribution"
        action, confidence = choose_action(probabilities, self._threshold)
        return Decision(action, confidence, (sell, hold, buy), versions)

    def _invalid(self, model: LoadedModel, why: str, versions: Mapping[str, str]) -> Decision:
        """A hold in place of a decision the model's output cannot make; counted, told once."""
        if self._unhealthy.get(model.slot) is None:
            logger.error(
                f"❌ [BRAIN] {model.slot} version {model.version} gave an invalid output ({why}); "
                "holding instead, and marking the model unhealthy"
            )
        self._unhealthy[model.slot] = f"version {model.version}: {why}"
        if self._invalid_observer is not None:
            self._invalid_observer(model.slot, model.version, why)
        return held(versions)

    async def decide_async(self, features: Sequence[float] | np.ndarray[Any, Any]) -> Decision:
        """:meth:`decide`, in a worker thread when the model is too slow for the event loop."""
        snapshot = self._snapshot
        if snapshot is None:
            return self.decide(features)  # raises: not loaded
        model = snapshot.decision.model
        measured = model.decision_seconds
        if measured is not None and measured > self._inline_seconds:
            self._slow.add(model.sha256)
        started = time.perf_counter()
        if model.sha256 in self._slow:
            loop = asyncio.get_running_loop()
            decision = await loop.run_in_executor(_DECIDING, self.decide, features)
        else:
            decision = self.decide(features)
        self._judge_latency(model, time.perf_counter() - started)
        return decision

    def _judge_latency(self, model: LoadedModel, seconds: float) -> None:
        """A model slower on the market than at warm-up: off the event loop from now on, and
        unhealthy when over the decision budget."""
        if seconds > self._inline_seconds and model.sha256 not in self._slow:
            self._slow.add(model.sha256)
            logger.warning(
                f"⚠️ [BRAIN] {model.slot} version {model.version} took {seconds * 1e3:.1f} ms "
                "to decide: its decisions run in a worker thread from now on"
            )
        budget = self._budget.max_decision_seconds
        if budget is not None and seconds > budget and model.slot not in self._unhealthy:
            self._unhealthy[model.slot] = (
                f"version {model.version}: a decision took {seconds * 1e3:.1f} ms, over "
                f"brain.max_decision_ms ({budget * 1e3:g} ms)"
            )
            logger.error(f"❌ [BRAIN] {model.slot} {self._unhealthy[model.slot]}")

    # -- the seed's ReloadModelsAsync ------------------------------------------------------

    async def reload_models(
        self, path: str | Path, slot: str | None = None, *, version: str | None = None
    ) -> bool:
        """The seed's ReloadModelsAsync: True when `path` now serves `slot` (default slot).

        Validated, backed up, installed and swapped by the install transaction this brain was
        attached to; False (the old model still serving) on any failure.
        """
        if self._reloader is None:
            logger.error("❌ [MODEL-RELOAD] No installer is attached to this brain")
            return False
        return await self._reloader.reload(
            Path(path), slot or self._settings.decision_slot, version
        )
