"""The models directory's write lock: one writer at a time across processes.

An advisory ``flock`` on ``models/.sync/write.lock``. The kernel drops it when the holder dies,
so a crashed writer never leaves the directory locked. The holder writes its pid into the file
so that the refused process can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from pathlib import Path

from app.errors import ModelsDirectoryLocked

_POLL_SECONDS = 0.05


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid else "another process"


class DirectoryLock:
    """The held write lock; `release()` it (ModelInstaller.write_lock wraps it for `with`)."""

    def __init__(self, lock_path: Path, *, wait_seconds: float = 0) -> None:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: the pid written below would land in someone's file
            self._fd: int | None = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise ModelsDirectoryLocked(
                f"{lock_path} cannot be a lock file ({error.strerror}); remove it"
            ) from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            os.close(self._fd)
            raise ModelsDirectoryLocked(f"{lock_path} is not a regular file; remove it")
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise ModelsDirectoryLocked(
                        f"{_holder(lock_path)} is writing to {lock_path.parent.parent}; "
                        "try again when it has finished"
                    ) from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
