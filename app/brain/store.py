"""The models directory on disk: staging, backups, atomic install and crash recovery.

Layout (DESIGN.md): active models under ``models/``, backups in ``models/backup/``, and
``models/.sync/`` for staging, the write lock and the install journal, on the same filesystem
so that an install is one ``os.replace``.

An install of a set of files is made all-or-nothing by a journal: before the first file is
replaced, the journal lists every (final path, backup, new SHA-256). It is removed once the
set is in place. A journal found at start-up means a crash mid-install: every file that already
holds its new content is restored from its backup, so the disk is exactly as before the install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loguru import logger

from app.brain.backups import backups_of, backups_to_prune, next_backup_name
from app.brain.lock import DirectoryLock
from app.fsutil import fsync_directory, sha256_of_file, write_bytes_atomically


@dataclass(frozen=True, slots=True)
class PlannedInstall:
    """One file of an install: where it goes, what it was before, what it will hold."""

    staged: Path
    final: Path
    backup: Path | None
    new_sha256: str


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Files of the models directory; every write goes through here."""

    def __init__(self, models_dir: Path, *, lock_wait_seconds: float = 0) -> None:
        self.root = models_dir
        self.backup_dir = models_dir / "backup"
        self.sync_dir = models_dir / ".sync"
        self.staging_dir = self.sync_dir / "staging"
        self.lock_wait_seconds = lock_wait_seconds
        self._journal = self.sync_dir / "install-journal.json"

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    @contextlib.contextmanager
    def write_lock(self, *, wait_seconds: float | None = None) -> Iterator[None]:
        """Hold the cross-process write lock (ModelsDirectoryLocked when another holds it)."""
        lock = self.acquire_write_lock(wait_seconds=wait_seconds)
        try:
            yield
        finally:
            lock.release()

    def acquire_write_lock(self, *, wait_seconds: float | None = None) -> DirectoryLock:
        wait = self.lock_wait_seconds if wait_seconds is None else wait_seconds
        return DirectoryLock(self.sync_dir / "write.lock", wait_seconds=wait)

    def owns(self, path: Path) -> bool:
        """True for files only this store writes (staging, backups): safe to hard-link."""
        resolved = path.resolve()
        return resolved.is_relative_to(self.sync_dir.resolve()) or resolved.is_relative_to(
            self.backup_dir.resolve()
        )

    # -- staging -------------------------------------------------------------------------

    def stage(self, source: Path, *, suffix: str = ".onnx") -> Path:
        """A private copy of `source` in staging.

        Validating and installing the staged copy means what was checked is what is installed,
        whatever happens to `source` meanwhile. Files this store owns are hard-linked (free);
        anything else is copied, since a user who later rewrites their file in place (``cp``
        does) must not rewrite the serving model through a shared inode.
        """
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        staged = self.staging_dir / f"{uuid.uuid4().hex}{suffix}"
        if self.owns(source):
            with contextlib.suppress(OSError):
                os.link(source, staged)
                return staged
        shutil.copyfile(source, staged)  # sendfile on Linux: one call, no GIL round trips
        return staged

    @staticmethod
    def make_durable(path: Path) -> None:
        """Flush a staged file to disk so that a rename cannot expose a half-written file."""
        _fsync_file(path)

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)

    def clear_staging(self) -> None:
        """Remove leftovers of interrupted work (called at start-up under the write lock)."""
        if self.staging_dir.exists():
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    # -- backups -------------------------------------------------------------------------

    def backup_names(self) -> list[str]:
        if not self.backup_dir.is_dir():
            return []
        return sorted(entry.name for entry in self.backup_dir.iterdir() if entry.is_file())

    def backups(self, slot: str) -> list[Path]:
        """Backups of `slot`, newest first."""
        return [self.backup_dir / b.file_name for b in backups_of(slot, self.backup_names())]

    def create_backup(self, slot: str, active: Path, when: datetime) -> Path:
        """A copy of the active file under a new, never-reused name (a hard link if possible)."""
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        while True:
            target = self.backup_dir / next_backup_name(slot, when, self.backup_names())
            try:
                os.link(active, target)
            except FileExistsError:
                continue  # someone took the name between our listing and our link
            except OSError:
                staged = self.stage(active)
                self.make_durable(staged)
                try:
                    os.link(staged, target)
                except FileExistsError:
                    continue
                finally:
                    staged.unlink(missing_ok=True)
            fsync_directory(self.backup_dir)
            return target

    def prune_backups(self, slot: str, keep: int) -> list[Path]:
        """Delete `slot`'s backups beyond the newest `keep`; returns what was deleted."""
        removed = []
        for name in backups_to_prune(slot, self.backup_names(), keep):
            path = self.backup_dir / name
            path.unlink(missing_ok=True)
            removed.append(path)
        if removed:
            fsync_directory(self.backup_dir)
        return removed

    # -- install -------------------------------------------------------------------------

    def install(self, plan: Sequence[PlannedInstall]) -> None:
        """Move every staged file to its final path, all or nothing (see the module docstring)."""
        self._write_journal(plan)
        try:
            for item in plan:
                item.final.parent.mkdir(parents=True, exist_ok=True)
                item.staged.replace(item.final)
                fsync_directory(item.final.parent)
        except BaseException:
            self.roll_back(plan)
            raise

    def commit(self) -> None:
        """The installed set is live: forget the journal."""
        self._journal.unlink(missing_ok=True)
        fsync_directory(self.sync_dir)

    def roll_back(self, plan: Sequence[PlannedInstall]) -> None:
        """Put back what was there before `plan` for every file it already replaced."""
        for item in plan:
            if not item.final.exists():
                continue
            if sha256_of_file(item.final) != item.new_sha256:
                continue  # not replaced yet: still the old content
            if item.backup is not None and item.backup.exists():
                restored = self.stage(item.backup)
                self.make_durable(restored)
                restored.replace(item.final)
            elif item.backup is None:
                item.final.unlink()
            fsync_directory(item.final.parent)
        self.commit()

    def _write_journal(self, plan: Sequence[PlannedInstall]) -> None:
        entries = [
            {
                "final": str(item.final),
                "backup": None if item.backup is None else str(item.backup),
                "new_sha256": item.new_sha256,
            }
            for item in plan
        ]
        write_bytes_atomically(self._journal, json.dumps({"install": entries}).encode())

    def recover_interrupted_install(self) -> bool:
        """Undo an install a crash left half-done; True when there was one."""
        if not self._journal.exists():
            return False
        try:
            entries = json.loads(self._journal.read_text())["install"]
            plan = [
                PlannedInstall(
                    staged=Path(),
                    final=Path(entry["final"]),
                    backup=None if entry["backup"] is None else Path(entry["backup"]),
                    new_sha256=str(entry["new_sha256"]),
                )
                for entry in entries
            ]
        except (ValueError, KeyError, TypeError) as error:
            # A torn journal means the crash came before any file was replaced.
            logger.warning(f"⚠️ [MODEL-RELOAD] Ignoring unreadable install journal: {error}")
            self.commit()
            return True
        logger.warning("⚠️ [MODEL-RELOAD] An install was interrupted; restoring the previous models")
        self.roll_back(plan)
        return True
