"""The backups of a models directory: listing, checking, retention, what a rollback restores.

Names follow ``backups.py``'s rules; each backup's SHA-256, version and provenance are in its
record (``records.py``). Files are only ever deleted here, by retention; they are created by
the install transaction.
"""

from __future__ import annotations

from pathlib import Path

from loguru import logger

from app.brain.models import LoadedModel
from app.fsutil import sha256_of_file
from app.install.backups import backups_of, parse_backup_name
from app.install.layout import ModelsLayout
from app.install.records import BackupRecord, Records

RollbackChoice = tuple[Path, str, BackupRecord | None]  # a backup, its SHA-256, its record


class BackupShelf:
    """Reads, checks and prunes backups (blocking: callers run it in a worker thread)."""

    def __init__(self, layout: ModelsLayout, records: Records, retention: int) -> None:
        self.layout = layout
        self.records = records
        self._retention = retention
        self._protected: dict[str, str] = {}  # slot -> SHA-256 whose newest backup stays

    def protect(self, slot: str, sha256: str | None) -> None:
        """Never prune the newest backup holding `sha256` (the lifecycle's champion: the model
        a failed candidate is rolled back to); None: nothing protected in `slot`."""
        if sha256 is None:
            self._protected.pop(slot, None)
        else:
            self._protected[slot] = sha256

    def names(self) -> list[str]:
        """Every backup's file name (names that do not parse are ignored, with a warning)."""
        if not self.layout.backup_dir.is_dir():
            return []
        names = []
        for entry in self.layout.backup_dir.iterdir():
            if not entry.is_file():
                continue
            if parse_backup_name(entry.name) is None:
                logger.warning(f"⚠️ [MODEL-RELOAD] Ignoring {entry}: not a backup's name")
                continue
            names.append(entry.name)
        return sorted(names)

    def of(self, slot: str) -> list[Path]:
        """Backups of `slot`, newest first."""
        return [self.layout.backup_dir / b.file_name for b in backups_of(slot, self.names())]

    def is_intact(self, backup: Path) -> bool:
        """True unless the backup's recorded SHA-256 says its bytes changed."""
        record = self.records.backup(backup.name)
        if record is None:
            return True  # an older version's backup: validation still decides
        return not _corrupt(backup, record, sha256_of_file(backup))

    def recorded(self, slot: str, sha256: str) -> Path | None:
        """The newest backup of `slot` whose record says it holds `sha256` (nothing hashed)."""
        return next((path for path in self.of(slot) if _sha_of(self.records, path) == sha256), None)

    def holding(self, slot: str, sha256: str) -> Path | None:
        """The newest intact backup of `slot` whose bytes hash to `sha256`, if any."""
        for path in self.of(slot):
            record = self.records.backup(path.name)
            if record is not None and record.sha256 != sha256:
                continue
            if sha256_of_file(path) == sha256:
                return path
        return None

    def drop_orphan_records(self) -> None:
        """Records whose backup is gone (a prune interrupted between the two deletions)."""
        folder = self.layout.backup_records_dir
        if not folder.is_dir():
            return
        for record in folder.glob("*.json"):
            if not (self.layout.backup_dir / record.stem).exists():
                record.unlink(missing_ok=True)

    def prune(self, slot: str, *, made: Path | None = None) -> None:
        """Delete `slot`'s recorded backups beyond the newest ``models.backup_retention``, but
        never the newest intact one. `made`: the backup this install just took of the model
        that served (intact by construction, so nothing needs hashing)."""
        keep = self._retention
        listed = self.of(slot)
        if len(listed) <= keep:
            return  # nothing to prune: no record need be read
        recorded = [path for path in listed if self.records.backup(path.name)]
        if len(recorded) <= keep:
            return
        kept = set(recorded[:keep])
        if made is None or made not in kept:
            newest_intact = next((p for p in recorded if self.is_intact(p)), None)
            if newest_intact is not None:
                kept.add(newest_intact)
        protected = self._protected.get(slot)
        if protected is not None:
            holder = next((p for p in recorded if _sha_of(self.records, p) == protected), None)
            if holder is not None:
                kept.add(holder)
        for path in recorded:
            if path in kept:
                continue
            path.unlink(missing_ok=True)  # the file first: a crash leaves an orphan record,
            self.layout.backup_record_file(path.name).unlink(missing_ok=True)  # dropped at start

    def choices(
        self, slot: str, name: str | None, serving: LoadedModel | None
    ) -> list[RollbackChoice] | str:
        """What a rollback may restore, best first (each with its hash and record), or why
        there is nothing: the named backup, else every intact one that differs from `serving`."""
        backups = self.of(slot)
        if name is not None:
            backups = [b for b in backups if name in {b.name, str(b)}]
            if not backups:
                return f"no backup {name!r} for slot {slot!r}"
        choices = []
        for path in backups:
            record = self.records.backup(path.name)
            sha = sha256_of_file(path)
            if _corrupt(path, record, sha):
                if name is not None:
                    return f"backup {path.name} is corrupt: its SHA-256 differs from its record"
                continue
            if (
                serving is not None
                and serving.fallback_reason is None
                and sha == serving.sha256
                and name is None
            ):
                continue
            choices.append((path, sha, record))
        if not choices:
            return f"slot {slot!r} has no backup that differs from the serving model"
        return choices


def _sha_of(records: Records, backup: Path) -> str | None:
    record = records.backup(backup.name)
    return None if record is None else record.sha256


def _corrupt(backup: Path, record: BackupRecord | None, sha256: str) -> bool:
    """True (and said) when `backup`'s bytes no longer hash to what its record says."""
    if record is None or record.sha256 == sha256:
        return False
    logger.error(f"❌ [MODEL-RELOAD] Backup {backup.name} is corrupt: its SHA-256 changed")
    return True
