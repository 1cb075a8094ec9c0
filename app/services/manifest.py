"""What an extracted artifact holds: its models, their checksums and the brain slots they fill.

``metadata.json`` in a folder describes that folder (keys written by the training workflow)::

    {"model_type": "...", "version": "...", "timestamp": "...", "slot": "unified_brain",
     "sha256_checksum": "<hex>",                  # the folder's single .onnx file
     "files": {"name.onnx": "<hex>", "scaler.pkl": "<hex>"}}

Every key is optional and ``null`` counts as absent; unknown keys are ignored. ``files`` names
are relative to the metadata's folder and may reach into its subfolders, never out of it.
``model_type``, ``version``, ``timestamp`` and ``slot`` describe the ``.onnx`` files in the
metadata's own folder. Every declared checksum is verified (hex, case-insensitive); one
mismatch rejects the whole artifact. A file named ``metadata.json`` in any letter case counts.
Its size is capped at extraction (``models.max_metadata_kb``) and its nesting here
(``MAX_METADATA_DEPTH``), before the JSON parser could recurse on it.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from app.errors import ArtifactError, ChecksumMismatch, NoModelForSlot
from app.fsutil import sha256_of_file
from app.logs import printable
from app.services.extraction import MODEL_SUFFIX, is_metadata

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from app.services.extraction import ExtractedArtifact

# The training workflow writes two levels ({"files": {...}}); far deeper is an attack on the parser.
MAX_METADATA_DEPTH = 64
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class ModelFile:
    """One ``.onnx`` file of an artifact, with what its folder's metadata says about it."""

    path: PurePosixPath
    sha256: str
    declared_sha256: str | None
    slot: str | None
    version: str | None
    model_type: str | None
    timestamp: str | None


@dataclass(frozen=True)
class ArtifactManifest:
    """The verified content of an extracted artifact: models and the files stored beside them."""

    root: Path
    models: tuple[ModelFile, ...]
    other_files: tuple[PurePosixPath, ...]


@dataclass(frozen=True)
class FolderMetadata:
    """One parsed ``metadata.json``; ``files`` keys are relative to the artifact root."""

    source: PurePosixPath
    model_type: str | None = None
    version: str | None = None
    timestamp: str | None = None
    slot: str | None = None
    sha256_checksum: str | None = None
    files: Mapping[PurePosixPath, str] = field(default_factory=dict)

    @property
    def folder(self) -> PurePosixPath:
        return self.source.parent


@dataclass(frozen=True)
class Declaration:
    """A checksum some metadata file declares for some file."""

    path: PurePosixPath
    sha256: str
    source: PurePosixPath


@dataclass(frozen=True)
class SlotAssignment:
    """Which model fills which slot; models that fill none are kept apart, not installed."""

    by_slot: dict[str, ModelFile]
    unassigned: tuple[ModelFile, ...]


def is_model(path: PurePosixPath) -> bool:
    return path.suffix.lower() == MODEL_SUFFIX


def _optional_text(source: PurePosixPath, data: dict[str, Any], key: str) -> str | None:
    """A text field, with control characters escaped: it will be shown in logs and terminals."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ArtifactError(f"{source}: {key!r} must be a non-empty string, got {value!r:.80}")
    return printable(value)


def _sha256_hex(source: PurePosixPath, where: str, value: Any) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ArtifactError(f"{source}: {where} must be a hex SHA-256, got {value!r}")
    return value.lower()


def _listed_path(source: PurePosixPath, name: str) -> PurePosixPath:
    parts = [part for part in name.split("/") if part not in {"", "."}]
    if not parts or ".." in parts or "\\" in name or name.startswith("/"):
        raise ArtifactError(f"{source}: 'files' entry {name!r} is not a path inside its folder")
    return source.parent.joinpath(*parts)


def _listed_files(source: PurePosixPath, listed: Any) -> dict[PurePosixPath, str]:
    if listed is None:
        return {}
    if not isinstance(listed, dict):
        raise ArtifactError(f"{source}: 'files' must be an object of name -> hex SHA-256")
    return {
        _listed_path(source, name): _sha256_hex(source, f"'files'[{name!r}]", value)
        for name, value in listed.items()
    }


def nesting_depth(raw: bytes) -> int:
    """How deep JSON text nests arrays and objects, brackets inside strings not counted."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b'""', raw)):
        if bracket in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_metadata(source: PurePosixPath, raw: bytes) -> FolderMetadata:
    """Read one ``metadata.json``; ArtifactError naming the file if it is malformed."""
    if nesting_depth(raw) > MAX_METADATA_DEPTH:
        raise ArtifactError(f"{source} is nested more than {MAX_METADATA_DEPTH} deep")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{source} is not valid JSON: {error}") from error
    except RecursionError as error:  # not reached past the depth check; kept as a backstop
        raise ArtifactError(f"{source} is nested too deep to parse") from error
    if not isinstance(data, dict):
        raise ArtifactError(f"{source} must hold a JSON object, got {type(data).__name__}")
    checksum = data.get("sha256_checksum")
    return FolderMetadata(
        source=source,
        model_type=_optional_text(source, data, "model_type"),
        version=_optional_text(source, data, "version"),
        timestamp=_optional_text(source, data, "timestamp"),
        slot=_optional_text(source, data, "slot"),
        sha256_checksum=None
        if checksum is None
        else _sha256_hex(source, "'sha256_checksum'", checksum),
        files=_listed_files(source, data.get("files")),
    )


def declarations(
    metadata: FolderMetadata, present: Iterable[PurePosixPath]
) -> tuple[Declaration, ...]:
    """The checksums ``metadata`` declares, each tied to an existing file; no I/O."""
    present = frozenset(present)
    found: list[Declaration] = []
    if metadata.sha256_checksum is not None:
        models = sorted(p for p in present if p.parent == metadata.folder and is_model(p))
        if len(models) != 1:
            shown = ", ".join(map(str, models)) or "none"
            raise ArtifactError(
                f"{metadata.source}: 'sha256_checksum' is for the folder's single model file, "
                f"but the folder has {len(models)} ({shown}); list them under 'files'"
            )
        found.append(Declaration(models[0], metadata.sha256_checksum, metadata.source))
    for path, sha256 in metadata.files.items():
        if path not in present:
            raise ArtifactError(
                f"{metadata.source} lists {path}, which the artifact does not contain "
                "(only .onnx, .json and .pkl members are extracted)"
            )
        found.append(Declaration(path, sha256, metadata.source))
    return tuple(found)


def _read_metadata(extracted: ExtractedArtifact) -> dict[PurePosixPath, FolderMetadata]:
    return {
        path.parent: parse_metadata(path, extracted.root.joinpath(*path.parts).read_bytes())
        for path in extracted.files
        if is_metadata(path)
    }


def build_manifest(extracted: ExtractedArtifact, *, require_checksums: bool) -> ArtifactManifest:
    """Verify every declared checksum of an extracted artifact and describe its models.

    ArtifactError for malformed or ambiguous metadata, a listed file that is missing, or (with
    ``require_checksums``) a model without a declared checksum; ChecksumMismatch for a
    checksum that does not match, naming the file, the expected and the actual value.
    """
    by_folder = _read_metadata(extracted)
    declared: defaultdict[PurePosixPath, list[Declaration]] = defaultdict(list)
    for metadata in by_folder.values():
        for declaration in declarations(metadata, extracted.files):
            declared[declaration.path].append(declaration)
    models = [path for path in extracted.files if is_model(path)]
    unchecked = [str(path) for path in models if path not in declared]
    if require_checksums and unchecked:
        raise ArtifactError(
            "models.require_checksums is on, and no metadata.json declares a SHA-256 for: "
            + ", ".join(unchecked)
        )
    actual = {
        path: extracted.sha256.get(path) or sha256_of_file(extracted.root.joinpath(*path.parts))
        for path in {*models, *declared}
    }
    for path, found in declared.items():
        for declaration in found:
            if declaration.sha256 != actual[path]:
                raise ChecksumMismatch(
                    f"{path}: {declaration.source} declares SHA-256 {declaration.sha256}, "
                    f"the file's is {actual[path]}"
                )
    return ArtifactManifest(
        root=extracted.root,
        models=tuple(
            _model_file(path, actual[path], declared.get(path), by_folder.get(path.parent))
            for path in models
        ),
        other_files=tuple(path for path in extracted.files if not is_model(path)),
    )


def _model_file(
    path: PurePosixPath,
    sha256: str,
    declared: list[Declaration] | None,
    metadata: FolderMetadata | None,
) -> ModelFile:
    return ModelFile(
        path=path,
        sha256=sha256,
        declared_sha256=declared[0].sha256 if declared else None,
        slot=metadata.slot if metadata else None,
        version=metadata.version if metadata else None,
        model_type=metadata.model_type if metadata else None,
        timestamp=metadata.timestamp if metadata else None,
    )


def _slot_of(model: ModelFile, slots: Mapping[str, str]) -> str | None:
    if model.slot is not None:
        if model.slot not in slots:
            raise ArtifactError(
                f"{model.path}: metadata names slot {model.slot!r}, which is not configured "
                f"(brain.slots: {', '.join(sorted(slots))})"
            )
        return model.slot
    for slot, slot_path in slots.items():
        if PurePosixPath(slot_path) == model.path:
            return slot
    return None


def assign_slots(manifest: ArtifactManifest, slots: Mapping[str, str]) -> SlotAssignment:
    """Map each model to a slot: by its metadata's ``slot``, else by its path, else the only one.

    ``slots`` maps slot names to paths relative to the models folder. The last rule applies
    when exactly one slot is configured and the artifact holds exactly one model. ArtifactError
    for an unknown slot name, two models for one slot, or no model for any slot.
    """
    by_slot: dict[str, ModelFile] = {}
    unassigned: list[ModelFile] = []
    for model in manifest.models:
        slot = _slot_of(model, slots)
        if slot is None:
            unassigned.append(model)
        elif slot in by_slot:
            raise ArtifactError(
                f"artifact has two models for slot {slot!r}: {by_slot[slot].path} and {model.path}"
            )
        else:
            by_slot[slot] = model
    if not by_slot and len(slots) == 1 and len(manifest.models) == 1:
        (only_slot,) = slots
        return SlotAssignment({only_slot: manifest.models[0]}, ())
    if not by_slot:
        wanted = ", ".join(f"{slot} ({path})" for slot, path in sorted(slots.items()))
        found = ", ".join(str(model.path) for model in manifest.models) or "no .onnx file"
        raise NoModelForSlot(
            f"artifact has no model for any configured slot: slots {wanted}; artifact has {found}"
        )
    return SlotAssignment(by_slot, tuple(unassigned))
