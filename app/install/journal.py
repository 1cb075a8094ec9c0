"""The install journal: what an install in flight will change, so a crash can be undone.

Written (atomically) before the first file under ``models/`` changes and removed once the
whole set is in place: its presence at start-up means a crash mid-install. It names, for every
file, where it goes, its staged copy, and the private link that keeps the file it replaces;
and every backup the install creates. Paths are stored relative to the models directory.

A journal is trusted only when every path in it is one the transaction itself would write: a
final path outside the reserved folders, or a provenance or backup record; staged and previous
copies inside the transaction's own staging folder; backups in ``backup/`` with a backup's name.
Anything else (a journal planted by someone else) is set aside untouched and reported.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

from app.fsutil import write_bytes_atomically
from app.install.backups import parse_backup_name
from app.install.layout import BACKUP_FOLDER, SYNC_FOLDER, ModelsLayout

_RECORD_FOLDERS = frozenset({"installed", "backups"})  # under .sync/: provenance, backup records


class UntrustedJournal(ValueError):
    """The journal names a path the transaction would never write."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One file of an install (paths relative to the models directory)."""

    final: str
    staged: str
    previous: str | None  # a private link to the file `final` held, None if there was none
    sha256: str


@dataclass(frozen=True, slots=True)
class Journal:
    transaction: str
    entries: tuple[JournalEntry, ...]
    backups: tuple[str, ...]

    def to_json(self) -> bytes:
        data = {
            "transaction": self.transaction,
            "entries": [asdict(entry) for entry in self.entries],
            "backups": list(self.backups),
        }
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Journal:
        data = json.loads(raw)
        return cls(
            transaction=str(data["transaction"]),
            entries=tuple(JournalEntry(**entry) for entry in data["entries"]),
            backups=tuple(str(name) for name in data["backups"]),
        )


def _plain(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or any(p in {"", ".", ".."} for p in path.parts):
        raise UntrustedJournal(f"{relative!r} is not a plain relative path")
    return path


def _check_final(relative: str) -> None:
    path = _plain(relative)
    if ModelsLayout.reserved_reason(path) is None:
        return
    parts = path.parts
    is_record = (
        len(parts) == 3
        and parts[0] == SYNC_FOLDER
        and parts[1] in _RECORD_FOLDERS
        and parts[2].endswith(".json")
    )
    if not is_record:
        raise UntrustedJournal(f"{relative!r} is a reserved path")


def _check_private(relative: str, transaction: str) -> None:
    parts = _plain(relative).parts
    if parts[:3] != (SYNC_FOLDER, "staging", transaction) or len(parts) < 4:
        raise UntrustedJournal(f"{relative!r} is outside the transaction's staging folder")


def _check_backup(relative: str) -> None:
    parts = _plain(relative).parts
    if len(parts) != 2 or parts[0] != BACKUP_FOLDER or parse_backup_name(parts[1]) is None:
        raise UntrustedJournal(f"{relative!r} is not a backup")


def check_trusted(journal: Journal) -> None:
    """Raise UntrustedJournal unless every path is one the transaction itself writes."""
    if not journal.transaction.isalnum():
        raise UntrustedJournal(f"transaction id {journal.transaction!r} is not ours")
    for entry in journal.entries:
        _check_final(entry.final)
        _check_private(entry.staged, journal.transaction)
        if entry.previous is not None:
            _check_private(entry.previous, journal.transaction)
    for backup in journal.backups:
        _check_backup(backup)


def write_journal(layout: ModelsLayout, journal: Journal) -> None:
    layout.sync_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(layout.journal, journal.to_json())


def read_journal(layout: ModelsLayout) -> Journal | None:
    """The journal of an interrupted install, or None; raises ValueError if unusable."""
    try:
        raw = layout.journal.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:  # a folder, unreadable: not a journal this program wrote
        raise UntrustedJournal(f"unreadable install journal ({error.strerror})") from None
    try:
        journal = Journal.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"unreadable install journal: {error}") from None
    check_trusted(journal)
    return journal
