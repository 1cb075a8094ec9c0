"""Backup names and retention: pure rules over file names.

A backup of slot ``unified_brain`` taken at 14:30:22 UTC on 2025-01-08 is named
``unified_brain_20250108_143022.onnx`` (the seed's format). A second backup in the same second
gets ``_2``, ``_3``... so an existing backup is never overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
_BACKUP_NAME = re.compile(r"^(?P<slot>.+)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?\.onnx$")


@dataclass(frozen=True, slots=True, order=True)
class BackupName:
    """A parsed backup file name; ordering is oldest first within a slot."""

    taken_at: datetime
    sequence: int
    slot: str

    @property
    def file_name(self) -> str:
        suffix = f"_{self.sequence}" if self.sequence > 1 else ""
        return f"{self.slot}_{self.taken_at.strftime(TIMESTAMP_FORMAT)}{suffix}.onnx"


def parse_backup_name(file_name: str) -> BackupName | None:
    """The slot and time of a backup file, or None when the name is not a backup's."""
    match = _BACKUP_NAME.match(file_name)
    if match is None:
        return None
    try:
        taken_at = datetime.strptime(match["stamp"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # shaped like a backup's name, but no real moment (month 99)
        return None
    return BackupName(taken_at=taken_at, sequence=int(match["seq"] or 1), slot=match["slot"])


def next_backup_name(slot: str, when: datetime, existing: Collection[str]) -> str:
    """A backup name for `slot` at `when` that is not in `existing` and sorts after them.

    The sequence continues after the highest one taken in the same second, never filling a gap
    that pruning left, so a newer backup never sorts (and is never pruned) as an older one.
    """
    taken_at = when.astimezone(UTC).replace(microsecond=0)
    same_second = [b.sequence for b in backups_of(slot, existing) if b.taken_at == taken_at]
    sequence = max(same_second, default=0) + 1
    return BackupName(taken_at=taken_at, sequence=sequence, slot=slot).file_name


def backups_of(slot: str, file_names: Iterable[str]) -> list[BackupName]:
    """The backups of `slot` among `file_names`, newest first."""
    found = [parsed for name in file_names if (parsed := parse_backup_name(name))]
    return sorted((b for b in found if b.slot == slot), reverse=True)


def backups_to_prune(slot: str, file_names: Iterable[str], keep: int) -> list[str]:
    """The file names of `slot`'s backups beyond the newest `keep`."""
    return [backup.file_name for backup in backups_of(slot, file_names)[keep:]]
