"""The install transaction: the one way anything under ``models/`` is written.

A transaction stages every file it will write (models, an artifact's other files, provenance
and backup records) in its own folder under ``models/.sync/staging/``, on the same filesystem,
flushed to disk. :meth:`Transaction.apply` then writes the journal (``journal.py``), keeps a
private hard link to every file about to be replaced, creates the planned backups (hard links
of the replaced models: the active path gets a new inode, so the backup is never shared with a
file anyone may rewrite in place), and renames each staged file over its final path.
:meth:`Transaction.commit` removes the journal: from that instant the new set is the installed
one. Until then a crash, or :meth:`Transaction.abort`, puts every file back (:func:`undo`):
after a crash at any point the disk is exactly as before or exactly as after, records included.

Everything here blocks; hold the models directory's write lock (``lock.py``) around it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from loguru import logger
from pydantic import BaseModel

from app.fsutil import fsync_directory, sha256_of_file
from app.install.journal import Journal, JournalEntry, read_journal, write_journal
from app.install.layout import ModelsLayout
from app.install.records import Origin, Provenance


def fsync_file(path: Path) -> None:
    """Flush a file's bytes to disk, so a rename can never expose a half-written file."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True, slots=True)
class _Placement:
    staged: Path
    final: Path
    sha256: str


class Transaction:
    """One all-or-nothing change to the models directory."""

    def __init__(self, layout: ModelsLayout) -> None:
        self._layout = layout
        self.id = uuid.uuid4().hex
        self.folder = layout.staging_dir / self.id
        self._placements: list[_Placement] = []
        self._backups: list[tuple[Path, Path]] = []  # (file replaced, its backup)
        self._durable: set[Path] = set()
        self._journal: Journal | None = None

    # -- staging -------------------------------------------------------------------------

    def _new_path(self, suffix: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{uuid.uuid4().hex}{suffix}"

    def stage_copy(self, source: Path, *, suffix: str = "") -> Path:
        """A private copy of `source` that nothing else can change.

        Scratch files of this project (an extracted artifact) are hard-linked, which is free;
        anything else (a user's file, a backup) is copied, since a file rewritten in place
        later must not rewrite what was validated, nor what will serve.
        """
        staged = self._new_path(suffix)
        if self._layout.is_private(source):
            with contextlib.suppress(OSError):
                os.link(source, staged)
                return staged
        shutil.copyfile(source, staged)  # sendfile on Linux: one call, no GIL round trips
        return staged

    def stage_move(self, source: Path, *, suffix: str = "") -> Path:
        """Take `source`, a scratch file of this project's (an extracted model), into staging.

        Moved, not linked: once installed, the active file then has no other name, so a later
        backup of it can be its own inode rather than a copy.
        """
        staged = self._new_path(suffix)
        source.replace(staged)
        return staged

    def make_durable(self, staged: Path) -> None:
        """Flush a staged file now (callers overlap it with validation)."""
        fsync_file(staged)
        self._durable.add(staged)

    def place(self, staged: Path, final: Path, sha256: str | None = None) -> None:
        """Plan `staged` (from this transaction) to become `final`."""
        digest = sha256 if sha256 is not None else sha256_of_file(staged)
        self._placements.append(_Placement(staged, final, digest))

    def place_record(self, record: BaseModel, final: Path) -> None:
        """Plan a JSON record (provenance, backup record) to be written at `final`."""
        data = record.model_dump_json(indent=2).encode()
        staged = self._new_path(".json")
        with staged.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        self._durable.add(staged)
        self.place(staged, final, hashlib.sha256(data).hexdigest())

    def place_provenance(
        self, origin: Origin, slot: str, final: Path, *, sha256: str, version: str, at: datetime
    ) -> None:
        """Plan the provenance record of the model this transaction installs at `final`."""
        provenance = Provenance(
            **origin.model_dump(),
            slot=slot,
            path=str(final),
            sha256=sha256,
            version=version,
            installed_at=at,
        )
        self.place_record(provenance, self._layout.provenance_file(slot))

    def back_up(self, active: Path, backup: Path) -> None:
        """Plan `backup` to become a name of the file `active` holds now."""
        self._backups.append((active, backup))

    @property
    def finals(self) -> list[Path]:
        return [placement.final for placement in self._placements]

    # -- applying ------------------------------------------------------------------------

    def _relative(self, path: Path) -> str:
        relative = self._layout.relative(path)
        if relative is None:
            raise ValueError(f"{path} is outside the models directory")
        return str(relative)

    def apply(self) -> None:
        """Make every planned change; on any failure put back what was done and re-raise."""
        for placement in self._placements:
            if placement.staged not in self._durable:
                self.make_durable(placement.staged)
        entries = []
        for number, placement in enumerate(self._placements):
            previous = self.folder / f"previous-{number}" if placement.final.exists() else None
            entries.append(
                JournalEntry(
                    final=self._relative(placement.final),
                    staged=self._relative(placement.staged),
                    previous=None if previous is None else self._relative(previous),
                    sha256=placement.sha256,
                )
            )
        journal = Journal(
            self.id, tuple(entries), tuple(self._relative(b) for _, b in self._backups)
        )
        write_journal(self._layout, journal)
        self._journal = journal
        try:
            for entry in entries:
                if entry.previous is not None:
                    os.link(self._layout.path_of(entry.final), self._layout.path_of(entry.previous))
            for active, backup in self._backups:
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.link(active, backup)
            if self._backups:
                fsync_directory(self._layout.backup_dir)
            for placement in self._placements:
                placement.final.parent.mkdir(parents=True, exist_ok=True)
                placement.staged.replace(placement.final)
                fsync_directory(placement.final.parent)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """The new set is installed: forget the journal and the staged leftovers."""
        self._layout.journal.unlink(missing_ok=True)
        fsync_directory(self._layout.sync_dir)
        self._journal = None
        self._drop_folder()

    def _drop_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._layout.staging_dir.rmdir()  # only when no other transaction is staging

    def abort(self) -> None:
        """Put back everything :meth:`apply` changed (nothing, if it did not run)."""
        if self._journal is not None:
            undo(self._layout, self._journal)
            self._journal = None
        self._drop_folder()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.lstat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def undo(layout: ModelsLayout, journal: Journal) -> None:
    """Put every file of `journal` back as it was before its install, then drop the journal.

    Only inside the models directory: a path whose folder a link leads elsewhere is left alone.
    A backup is removed only when it is a name of a file the install replaced (the journal's
    own `previous` links), so a journal can never make an older backup go.
    """
    replaced = set()
    for entry in reversed(journal.entries):
        final = layout.path_of(entry.final)
        if not layout.holds(final):
            logger.error(f"❌ [MODEL-RELOAD] Not restoring {final}: its folder leads outside")
            continue
        if entry.previous is not None:
            previous = layout.path_of(entry.previous)
            if (identity := _identity(previous)) is not None and layout.holds(previous):
                replaced.add(identity)
                # Back to the file it held (a no-op if the rename had not happened yet).
                previous.replace(final)
        elif final.is_file() and sha256_of_file(final) == entry.sha256:
            final.unlink()  # a file the install added
        if final.parent.exists():
            fsync_directory(final.parent)
    for name in journal.backups:
        backup = layout.path_of(name)
        if layout.holds(backup) and _identity(backup) in replaced:
            backup.unlink()
    if layout.backup_dir.exists():
        fsync_directory(layout.backup_dir)
    layout.journal.unlink(missing_ok=True)
    fsync_directory(layout.sync_dir)


def recover(layout: ModelsLayout) -> bool:
    """Undo an install that a crash interrupted; True when there was one.

    A journal that names paths the transaction would never write is not acted on: it is
    renamed aside (``install-journal.json.untrusted``) and reported.
    """
    try:
        journal = read_journal(layout)
    except ValueError as error:
        aside = layout.journal.with_name(layout.journal.name + ".untrusted")
        layout.journal.replace(aside)
        logger.error(
            f"❌ [MODEL-RELOAD] Ignored an install journal this program did not write "
            f"({error}); kept it as {aside}"
        )
        return False
    if journal is None:
        return False
    logger.warning("⚠️ [MODEL-RELOAD] An install was interrupted; restoring the previous models")
    undo(layout, journal)
    return True
