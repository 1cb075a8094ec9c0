"""What the install transaction writes beside the models: provenance and backup records.

One type says where a model came from (:class:`Origin`); a provenance record is that origin
plus the model it installed, and a backup record is a backup's SHA-256 plus the provenance the
model had while it served. All are written only by the transaction (``transaction.py``) and
read by everyone else through :class:`Records`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

from loguru import logger
from pydantic import BaseModel, ConfigDict, ValidationError

from app.install.layout import ModelsLayout

# lifecycle: restored by the model lifecycle (the canary judge, or a reject by hand).
Source = Literal["github", "webhook", "inbox", "cli", "embedded", "rollback", "disk", "lifecycle"]


class _Record(BaseModel):
    # Unknown keys are ignored and optional ones default to None, so that a file written by a
    # newer or older version still loads.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Origin(_Record):
    """Where an artifact (or a model file) came from: the one artifact reference type."""

    source: Source
    artifact_name: str | None = None
    run_id: int | None = None
    run_attempt: int | None = None
    artifact_id: int | None = None
    head_sha: str | None = None
    branch: str | None = None
    digest: str | None = None


class Provenance(Origin):
    """Where the model in service for one slot came from, and which model it is."""

    slot: str
    path: str
    sha256: str
    version: str | None = None
    installed_at: datetime

    @property
    def origin(self) -> Origin:
        return Origin.model_validate(self.model_dump(include=set(Origin.model_fields)))


class BackupRecord(_Record):
    """A backup's content hash, and the provenance its model had while it served."""

    name: str
    slot: str
    sha256: str
    version: str
    taken_at: datetime
    provenance: Provenance | None = None


def describe_invalid(error: ValidationError) -> str:
    """One line saying what is wrong with a JSON record."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['msg']}"
    location = ".".join(str(part) for part in first["loc"]) or "top level"
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{location}: {first['msg']}{more}"


_R = TypeVar("_R", bound=_Record)


def _read(kind: type[_R], path: Path, what: str) -> _R | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        logger.error(f"❌ [CLOUD-SYNC] {what} {path} is unreadable ({error.strerror}); ignoring it")
        return None
    try:
        return kind.model_validate_json(raw)
    except ValidationError as error:
        reason = describe_invalid(error)
    logger.error(f"❌ [CLOUD-SYNC] {what} {path} is unreadable ({reason}); ignoring it")
    return None


class Records:
    """Reads the provenance and backup records of one models directory."""

    def __init__(self, layout: ModelsLayout) -> None:
        self._layout = layout

    def provenance(self, slot: str) -> Provenance | None:
        return _read(Provenance, self._layout.provenance_file(slot), "Provenance file")

    def all_provenance(self) -> dict[str, Provenance]:
        try:
            files = sorted(self._layout.provenance_dir.glob("*.json"))
        except OSError:
            return {}
        found = {path.stem: _read(Provenance, path, "Provenance file") for path in files}
        return {slot: record for slot, record in found.items() if record is not None}

    def backup(self, name: str) -> BackupRecord | None:
        return _read(BackupRecord, self._layout.backup_record_file(name), "Backup record")

    def version_of(self, slot: str, sha256: str) -> str | None:
        """The version recorded for this very model in `slot`, if it was installed here."""
        record = self.provenance(slot)
        if record is not None and record.sha256 == sha256:
            return record.version
        return None
