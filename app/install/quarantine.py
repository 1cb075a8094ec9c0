"""The quarantine: models never installed again until they are released by hand.

A model the canary judge rolled back, or one rejected by hand, is added by its SHA-256, with
the artifact it came in (its :class:`~app.install.records.Origin`). From then on every install
path of :class:`~app.install.installer.ModelInstaller` refuses it (sync, webhook, inbox,
``install``, a file replaced on disk; a rollback passes over it), and the sync refuses its
artifact before downloading it, until ``python -m app quarantine release SHA256`` (or
``POST /admin/quarantine/release``) releases it.

``models/.sync/quarantine.json`` is the truth: every question reads it afresh (it is small), so
a release by another process counts at once, with or without a running host. Each change is a
read-modify-write under ``models/.sync/quarantine.lock`` (a short flock of its own, so that a
release never waits for an install), written atomically. A missing file is an empty quarantine.

A file that cannot be read (not JSON, an entry that does not parse, unreadable) fails closed:
every question raises :class:`~app.errors.QuarantineUnreadable`, so no model is installed,
restored or picked up from disk, and nothing is added or released, until it is repaired (or
removed, which releases every model). Failing open would let a model rolled back for how it
traded come back in unnoticed; failing closed only keeps the bot trading the model it has, and
every refusal says why. The file is left as it is for whoever repairs it, and the problem is
logged once per version of the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import AmbiguousSha256, ModelQuarantined, QuarantineUnreadable
from app.fsutil import write_bytes_atomically
from app.install.layout import ModelsLayout
from app.install.lock import DirectoryLock
from app.install.records import Origin, describe_invalid

MIN_PREFIX_DIGITS = 8
LOCK_WAIT_SECONDS = 10.0  # a change holds the lock for one small fsynced write
_HEX_DIGITS = frozenset("0123456789abcdef")
# Origins that name a GitHub artifact (an artifact id; a run id and an artifact name).
_ARTIFACT_SOURCES = frozenset({"github", "webhook"})


def _now() -> datetime:
    return datetime.now(UTC)


class QuarantineEntry(BaseModel):
    """One quarantined model: which one, since when, why, and the artifact it came in."""

    # Unknown keys are ignored, so that a file written by a newer version still loads.
    model_config = ConfigDict(extra="ignore", frozen=True)

    sha256: str
    slot: str
    version: str
    at: AwareDatetime = Field(default_factory=_now)
    why: str
    origin: Origin | None = None

    @field_validator("sha256")
    @classmethod
    def _a_sha256(cls, value: str) -> str:
        value = value.lower()
        if len(value) != 64 or not set(value) <= _HEX_DIGITS:
            raise ValueError("must be a SHA-256: 64 hex digits")
        return value

    @field_validator("at")
    @classmethod
    def _utc_to_the_second(cls, value: datetime) -> datetime:
        return value.astimezone(UTC).replace(microsecond=0)

    @field_validator("why")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split()) or "no reason given"

    @property
    def since(self) -> str:
        """When it was quarantined, as ISO-8601 UTC (``2025-01-08T14:30:22Z``)."""
        return self.at.isoformat().replace("+00:00", "Z")

    def refusal(self) -> ModelQuarantined:
        """The error that refuses this model, saying why and how to release it."""
        return ModelQuarantined(
            sha256=self.sha256, version=self.version, why=self.why, since=self.since
        )

    def came_in(self, origin: Origin) -> bool:
        """True when `origin` names the artifact this model came in: the same artifact id, or
        the same run id and artifact name."""
        mine = self.origin
        if mine is None:
            return False
        if origin.artifact_id is not None and mine.artifact_id == origin.artifact_id:
            return True
        return (
            origin.run_id is not None
            and origin.artifact_name is not None
            and (mine.run_id, mine.artifact_name) == (origin.run_id, origin.artifact_name)
        )


class _QuarantineFile(BaseModel):
    """``quarantine.json``: the entries, newest first (the shape ``quarantine --json`` prints)."""

    model_config = ConfigDict(extra="ignore")

    quarantine: list[QuarantineEntry] = Field(default_factory=list)


def _newest_first(entries: Sequence[QuarantineEntry]) -> list[QuarantineEntry]:
    return sorted(entries, key=lambda entry: entry.at, reverse=True)  # stable: ties keep order


def _prefix(sha256_or_prefix: str) -> str:
    prefix = sha256_or_prefix.strip().lower()
    if not MIN_PREFIX_DIGITS <= len(prefix) <= 64 or not set(prefix) <= _HEX_DIGITS:
        shown = sha256_or_prefix if len(sha256_or_prefix) <= 70 else sha256_or_prefix[:67] + "..."
        raise AmbiguousSha256(
            f"{shown!r} is not a SHA-256 or a prefix of one of at least "
            f"{MIN_PREFIX_DIGITS} hex digits"
        )
    return prefix


class Quarantine:
    """The quarantined models of one models directory (blocking: small file reads and writes)."""

    def __init__(
        self, layout: ModelsLayout, *, lock_wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> None:
        self._layout = layout
        self._lock_wait_seconds = lock_wait_seconds
        self._reported: tuple[int, int, int] | None = None  # the unreadable file last logged

    @property
    def path(self) -> Path:
        return self._layout.quarantine_file

    def entries(self) -> list[QuarantineEntry]:
        """Every quarantined model, newest first."""
        return self._read()

    def holds(self, sha256: str) -> QuarantineEntry | None:
        """The entry of the model with this SHA-256, or None when it is not quarantined."""
        wanted = sha256.lower()
        return next((entry for entry in self._read() if entry.sha256 == wanted), None)

    def holds_artifact(self, origin: Origin) -> QuarantineEntry | None:
        """The entry of a model that came in the artifact `origin` names (a GitHub artifact,
        from the poll or a webhook); None for other origins, which name no artifact of GitHub."""
        if origin.source not in _ARTIFACT_SOURCES:
            return None
        return next((entry for entry in self._read() if entry.came_in(origin)), None)

    def check(self, sha256: str) -> None:
        """Raise ModelQuarantined when the model with this SHA-256 is quarantined."""
        entry = self.holds(sha256)
        if entry is not None:
            raise entry.refusal()

    def add(self, entry: QuarantineEntry) -> None:
        """Quarantine a model; an earlier entry of the same SHA-256 is replaced."""
        with self._changing() as entries:
            self._write([entry, *(held for held in entries if held.sha256 != entry.sha256)])
        logger.bind(slot=entry.slot, version=entry.version, reason=entry.why).warning(
            f"⛔ [QUARANTINE] Quarantined {entry.slot} version {entry.version} "
            f"(sha256 {entry.sha256[:12]}): {entry.why}"
        )

    def release(self, sha256_or_prefix: str) -> QuarantineEntry | None:
        """Release the model whose SHA-256 is, or starts with, the digits given (at least 8);
        None when no quarantined model has it. AmbiguousSha256 when several do."""
        prefix = _prefix(sha256_or_prefix)
        with self._changing() as entries:
            matching = [entry for entry in entries if entry.sha256.startswith(prefix)]
            if len(matching) > 1:
                listed = ", ".join(entry.sha256[:16] for entry in matching)
                raise AmbiguousSha256(
                    f"{prefix} starts the SHA-256 of {len(matching)} quarantined models "
                    f"({listed}); give more digits"
                )
            if not matching:
                return None
            [released] = matching
            self._write([entry for entry in entries if entry is not released])
        logger.bind(slot=released.slot, version=released.version).info(
            f"✅ [QUARANTINE] Released {released.slot} version {released.version} "
            f"(sha256 {released.sha256[:12]}), quarantined since {released.since}: "
            f"{released.why}"
        )
        return released

    # -- the file ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[QuarantineEntry]]:
        """The entries as they are, under the quarantine's lock, for one read-modify-write."""
        lock = DirectoryLock(self._layout.quarantine_lock, wait_seconds=self._lock_wait_seconds)
        try:
            self._layout.clear_quarantine_scratch()  # what a writer killed mid-write left
            yield self._read()
        finally:
            lock.release()

    def _write(self, entries: Sequence[QuarantineEntry]) -> None:
        document = _QuarantineFile(quarantine=_newest_first(entries))
        write_bytes_atomically(self.path, document.model_dump_json(indent=2) + "\n")

    def _read(self) -> list[QuarantineEntry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise self._unreadable(error.strerror or str(error)) from None
        try:
            entries = _QuarantineFile.model_validate_json(raw).quarantine
        except ValidationError as error:
            raise self._unreadable(describe_invalid(error)) from None
        return _newest_first(entries)

    def _unreadable(self, reason: str) -> QuarantineUnreadable:
        error = QuarantineUnreadable(
            f"the quarantine file {self.path} is unreadable ({reason}): every model counts as "
            "quarantined until it is repaired (removing it releases every model)"
        )
        try:
            status = self.path.stat()
            version: tuple[int, int, int] | None = (
                status.st_ino,
                status.st_mtime_ns,
                status.st_size,
            )
        except OSError:
            version = None
        if version is None or version != self._reported:
            logger.error(f"❌ [QUARANTINE] {error}")
            self._reported = version
        return error
