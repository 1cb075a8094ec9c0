"""Durable file replacement: a reader sees the old file or the new one, never half of either.

The recipe is the POSIX one: write a temporary file in the target's own folder (so the rename stays
on one filesystem), flush and ``fsync`` it, ``os.replace`` it over the target, then ``fsync`` the
folder so the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import tempfile
from pathlib import Path

# Windows cannot open a folder for fsync; its renames are made durable by NTFS's journal instead.
_CAN_FSYNC_DIRECTORIES = os.name == "posix"


def fsync_directory(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    if not _CAN_FSYNC_DIRECTORIES:
        return
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomically(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (a ``str`` is written as UTF-8), all or nothing.

    The folder must exist. The new file is private to its owner (mode 0600, from ``mkstemp``),
    which suits state and provenance files. On any failure the temporary file is removed and the
    old ``path``, if there was one, is left as it was. ``durable=False`` skips the fsyncs: the
    replacement is still all or nothing if the process dies, but a power loss may undo it.
    """
    payload = data.encode() if isinstance(data, str) else data
    descriptor, temporary_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as staged:
            staged.write(payload)
            staged.flush()
            if durable:
                os.fsync(staged.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    if durable:
        fsync_directory(path.parent)


def sha256_of_file(path: Path) -> str:
    """Hex SHA-256 of a file, hashed through a memory map in one call.

    One call means the GIL is released once for the whole file: hashing in 1 MiB rounds took
    the GIL back hundreds of times and showed as event-loop lag while a model was being swapped.
    """
    with path.open("rb") as stream:
        if os.fstat(stream.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()
