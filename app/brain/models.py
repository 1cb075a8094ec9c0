"""Loaded models and the immutable snapshot the brain decides from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from app.brain.runtime import FileIdentity
from app.brain.signature import ModelSignature


def version_label(sha256: str, *named: str | None) -> str:
    """A model's version: the first name given (producer's, then the file's own), else the
    first 12 hex digits of its SHA-256."""
    return next((name for name in named if name), sha256[:12])


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A validated, warmed-up model serving one slot."""

    slot: str
    path: Path
    sha256: str
    version: str
    size_bytes: int
    signature: ModelSignature
    identity: FileIdentity
    session: Any = field(repr=False, compare=False)
    # Set when the slot's active file could not serve and this model came from a backup.
    fallback_reason: str | None = None
    decision_seconds: float | None = None  # p99 single-row decision at warm-up (decision slot)


@dataclass(frozen=True, slots=True)
class DecisionFeed:
    """What `decide()` needs of the decision slot's model, looked up once per snapshot."""

    session: Any
    input_name: str
    output_names: list[str]
    model: LoadedModel

    @classmethod
    def of(cls, model: LoadedModel) -> DecisionFeed:
        inputs, outputs = model.signature.inputs, model.signature.outputs
        return cls(model.session, inputs[0].name, [outputs[0].name], model)


@dataclass(frozen=True, slots=True)
class BrainSnapshot:
    """Every slot's model at one instant; replaced whole, never changed in place.

    `models` are the installed models (what the files on disk hold). The decision slot's
    decisions come from `pinned` when the model lifecycle has pinned one (the champion, while
    a newly installed model waits in shadow; the incumbent, the moment a canary fails), else
    from the installed model; `versions` name the models that decide.
    """

    models: Mapping[str, LoadedModel]
    versions: Mapping[str, str]
    decision_slot: str
    decision: DecisionFeed
    pinned: LoadedModel | None = None

    @classmethod
    def of(
        cls,
        models: Mapping[str, LoadedModel],
        decision_slot: str,
        pinned: LoadedModel | None = None,
    ) -> BrainSnapshot:
        frozen = MappingProxyType(dict(models))
        deciding = pinned or frozen[decision_slot]
        versions = {slot: m.version for slot, m in frozen.items()}
        versions[decision_slot] = deciding.version
        return cls(
            models=frozen,
            versions=MappingProxyType(versions),
            decision_slot=decision_slot,
            decision=DecisionFeed.of(deciding),
            pinned=pinned,
        )

    @property
    def deciding(self) -> LoadedModel:
        """The model whose decisions trade (the pinned one, else the installed one)."""
        return self.decision.model

    def replacing(self, changes: Mapping[str, LoadedModel]) -> BrainSnapshot:
        return BrainSnapshot.of({**self.models, **changes}, self.decision_slot, self.pinned)

    def pinning(self, model: LoadedModel | None) -> BrainSnapshot:
        return BrainSnapshot.of(self.models, self.decision_slot, model)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model file offered for a slot, with the version its producer gave it (if any)."""

    slot: str
    path: Path
    version: str | None = None
    # The SHA-256 the caller already computed from these very bytes (the sync pipeline hashes
    # while extracting into its private staging); saves hashing a large model twice.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class SwapResult:
    """What a reload did: installed models and their backups, or why nothing changed."""

    ok: bool
    reason: str
    # True when the refusal says nothing about the model (the directory was locked, an
    # unexpected error): the same candidate may well install on a later try.
    retryable: bool = False
    installed: Mapping[str, LoadedModel] = field(default_factory=dict)
    backups: Mapping[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SwapEvent:
    """Told to listeners after every reload attempt (for metrics, alerts, state)."""

    kind: str  # "installed" | "refused" | "rolled_back" | "refreshed"
    result: SwapResult
    source: str
    slots: tuple[str, ...]
    offered: Mapping[str, Path] = field(default_factory=dict)  # the candidate file per slot
