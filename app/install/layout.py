"""Every path under the models directory, in one place.

::

    models/<slot path>                          an active model (default: unified_brain.onnx)
    models/<artifact path>                      an artifact's other files (metadata.json, .pkl)
    models/backup/<slot>_YYYYMMDD_HHMMSS.onnx   backups of replaced models
    models/inbox/                               artifact zips dropped by hand
    models/.sync/state.json                     the sync's memory (artifacts seen, ETags)
    models/.sync/installed/<slot>.json          provenance of each active model
    models/.sync/backups/<backup name>.json     SHA-256 and provenance of each backup
    models/.sync/install-journal.json           present only while an install is in flight
    models/.sync/lifecycle.json                 the decision slot's stage (shadow, canary...)
    models/.sync/ops.json                       the running host's ops address and control
                                                token (for promote/reject from the CLI)
    models/.sync/journal.sqlite3                the decision journal (decisions, outcomes,
                                                stage changes)
    models/.sync/quarantine.json                models never to be installed again until released
    models/.sync/{write,sync,host}.lock         the writer's, the sync cycle's, the host's lock
    models/.sync/quarantine.lock                held while the quarantine file is rewritten
    models/.sync/{staging,downloads,work}/      private working space, emptied at start-up

``backup/``, ``inbox/`` and ``.sync/`` (and any name starting with a dot) are reserved: an
artifact may place files anywhere else under ``models/``, never there.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.errors import ConfigurationError

BACKUP_FOLDER = "backup"
INBOX_FOLDER = "inbox"
SYNC_FOLDER = ".sync"
RESERVED_FOLDERS = frozenset({BACKUP_FOLDER, INBOX_FOLDER, SYNC_FOLDER})


def _folder_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def _remove_temporaries(folder: Path, name: str) -> int:
    """Delete what an interrupted ``write_bytes_atomically(folder / name)`` left behind."""
    freed = 0
    if not folder.is_dir():
        return freed
    for leftover in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            freed += leftover.stat().st_size
            leftover.unlink()
    return freed


@dataclass(frozen=True, slots=True)
class ModelsLayout:
    """Where each kind of file lives under one models directory."""

    root: Path

    @property
    def backup_dir(self) -> Path:
        return self.root / BACKUP_FOLDER

    @property
    def inbox_dir(self) -> Path:
        return self.root / INBOX_FOLDER

    @property
    def sync_dir(self) -> Path:
        return self.root / SYNC_FOLDER

    @property
    def state_file(self) -> Path:
        return self.sync_dir / "state.json"

    @property
    def provenance_dir(self) -> Path:
        return self.sync_dir / "installed"

    @property
    def backup_records_dir(self) -> Path:
        return self.sync_dir / "backups"

    @property
    def journal(self) -> Path:
        return self.sync_dir / "install-journal.json"

    @property
    def lifecycle_file(self) -> Path:
        """The model lifecycle's present stage (``app/lifecycle/record.py``)."""
        return self.sync_dir / "lifecycle.json"

    @property
    def ops_file(self) -> Path:
        """Where the running host's ops server listens, and its control token (0600)."""
        return self.sync_dir / "ops.json"

    @property
    def quarantine_file(self) -> Path:
        return self.sync_dir / "quarantine.json"

    @property
    def quarantine_lock(self) -> Path:
        return self.sync_dir / "quarantine.lock"

    @property
    def write_lock(self) -> Path:
        return self.sync_dir / "write.lock"

    @property
    def sync_lock(self) -> Path:
        return self.sync_dir / "sync.lock"

    @property
    def host_lock(self) -> Path:
        return self.sync_dir / "host.lock"

    @property
    def staging_dir(self) -> Path:
        return self.sync_dir / "staging"

    @property
    def downloads_dir(self) -> Path:
        return self.sync_dir / "downloads"

    @property
    def work_dir(self) -> Path:
        return self.sync_dir / "work"

    @property
    def scratch_dirs(self) -> tuple[Path, ...]:
        """Folders whose content is only ever work in progress."""
        return (self.staging_dir, self.downloads_dir, self.work_dir)

    def _clear(self, folders: tuple[Path, ...], temporary_of: str) -> int:
        freed = 0
        for folder in folders:
            if folder.exists():
                freed += _folder_size(folder)
                shutil.rmtree(folder, ignore_errors=True)
        return freed + _remove_temporaries(self.sync_dir, temporary_of)

    def clear_install_scratch(self) -> int:
        """Remove what interrupted installs left (hold the write lock); the bytes freed."""
        return self._clear((self.staging_dir,), self.journal.name)

    def clear_sync_scratch(self) -> int:
        """Remove what interrupted sync cycles left (hold the sync lock); the bytes freed."""
        return self._clear((self.downloads_dir, self.work_dir), self.state_file.name)

    def clear_quarantine_scratch(self) -> int:
        """Remove what interrupted quarantine writes left (hold the quarantine lock)."""
        return self._clear((), self.quarantine_file.name)

    def path_of(self, relative: str | PurePosixPath) -> Path:
        """The absolute path of a file named relative to the models directory."""
        return self.root / str(relative)

    def provenance_file(self, slot: str) -> Path:
        name = f"{slot}.json"
        if not slot or slot.startswith(".") or "/" in slot or "\\" in slot:
            raise ConfigurationError(
                f"brain.slots: slot name {slot!r} cannot name a provenance file"
            )
        return self.provenance_dir / name

    def backup_record_file(self, backup_name: str) -> Path:
        return self.backup_records_dir / f"{backup_name}.json"

    def relative(self, path: Path) -> PurePosixPath | None:
        """`path` relative to the models directory, or None when it lies outside.

        By name: a symbolic link is the link, not what it points to (an active file may be one).
        """
        try:
            named = path.absolute().relative_to(self.root.absolute())
        except ValueError:
            return None
        return PurePosixPath(named.as_posix())

    def holds(self, path: Path) -> bool:
        """True when `path`'s folder really is inside the models directory (no link leads out)."""
        return path.parent.resolve().is_relative_to(self.root.resolve())

    def is_private(self, path: Path) -> bool:
        """True for files only this project writes and nothing rewrites in place (scratch)."""
        resolved = path.resolve()
        return any(resolved.is_relative_to(folder.resolve()) for folder in self.scratch_dirs)

    @staticmethod
    def reserved_reason(relative: PurePosixPath) -> str | None:
        """Why an artifact may not place a file at `relative`, or None when it may."""
        if not relative.parts:
            return "an empty path"
        top = relative.parts[0]
        if top.casefold() in RESERVED_FOLDERS:
            return f"{top}/ is reserved for the models directory's own state"
        hidden = next((part for part in relative.parts if part.startswith(".")), None)
        if hidden is not None:
            return f"names starting with '.' ({hidden}) are reserved"
        return None
