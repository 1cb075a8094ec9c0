"""What a start does to the models directory before anything loads (blocking).

A writing start (the host, ``install``, ``rollback``, ``sync``) undoes an interrupted install,
removes every leftover, gives each active file an inode of its own and applies retention. A
read-only start (``status``, ``--smoke``) changes nothing and loads what the next writing start
would serve. A slot whose active file cannot serve starts on its newest valid backup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from loguru import logger

from app.brain.brain import TradingBrain
from app.brain.models import LoadedModel
from app.errors import ModelError, ModelsDirectoryLocked
from app.install.journal import read_journal
from app.install.layout import ModelsLayout
from app.install.lock import DirectoryLock
from app.install.shelf import BackupShelf
from app.install.transaction import Transaction, recover


def clear_interrupted_work(
    layout: ModelsLayout, shelf: BackupShelf, slots: Sequence[str], actives: Sequence[Path]
) -> None:
    """Undo an interrupted install and remove every leftover (under the write lock)."""
    recover(layout)
    freed = layout.clear_install_scratch() + _clear_sync_scratch(layout)
    if freed:
        logger.info(f"🧹 [MODEL-RELOAD] Removed {freed} bytes of unfinished work")
    _break_shared_inodes(layout, actives)
    for slot in slots:
        shelf.prune(slot)  # one an interrupted install did not finish
    shelf.drop_orphan_records()


def files_a_recovery_restores(layout: ModelsLayout) -> dict[Path, Path]:
    """Final path -> the file recovery would put back there, from an interrupted install."""
    try:
        journal = read_journal(layout)
    except ValueError:
        return {}
    if journal is None:
        return {}
    logger.warning(
        "⚠️ [MODEL-RELOAD] An install was interrupted; showing what the next start restores"
    )
    return {
        layout.path_of(entry.final): layout.path_of(entry.previous)
        for entry in journal.entries
        if entry.previous is not None and layout.path_of(entry.previous).exists()
    }


def newest_valid_backup(
    brain: TradingBrain,
    shelf: BackupShelf,
    slot: str,
    *,
    path: Path,
    loaded: Mapping[str, LoadedModel],
) -> tuple[Path, LoadedModel] | None:
    """The slot's newest intact backup that validates, loaded to serve at `path`."""
    for backup in shelf.of(slot):
        if not shelf.is_intact(backup):
            continue
        record = shelf.records.backup(backup.name)
        try:
            model = brain.load_model(
                slot,
                backup,
                serving=None,
                version=None if record is None else record.version,
                installed_at=path,
                alongside=loaded,
            )
        except ModelError:
            continue
        return backup, model
    return None


def _clear_sync_scratch(layout: ModelsLayout) -> int:
    try:
        lock = DirectoryLock(layout.sync_lock)
    except ModelsDirectoryLocked:
        return 0  # a sync is running in another process: its downloads are live
    try:
        return layout.clear_sync_scratch()
    finally:
        lock.release()


def _break_shared_inodes(layout: ModelsLayout, actives: Sequence[Path]) -> None:
    """Give an active file its own copy when it shares an inode with a backup.

    Older versions restored backups by hard link; an in-place write to the active file would
    then rewrite the backup too.
    """
    if not layout.backup_dir.is_dir():
        return
    backups = {}
    for entry in layout.backup_dir.iterdir():
        if entry.is_file():
            stat = entry.stat()
            backups[(stat.st_dev, stat.st_ino)] = entry
    for active in actives:
        try:
            stat = active.stat()
        except FileNotFoundError:
            continue
        if (stat.st_dev, stat.st_ino) not in backups:
            continue
        transaction = Transaction(layout)
        staged = transaction.stage_copy(active, suffix=active.suffix)
        transaction.place(staged, active)
        transaction.apply()
        transaction.commit()
        logger.info(f"💾 [MODEL-RELOAD] {active} no longer shares its file with a backup")
