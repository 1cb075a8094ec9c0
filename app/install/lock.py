"""The models directory's locks: one writer, one sync cycle, one host at a time.

An advisory ``flock`` on a file under ``models/.sync/`` (``write.lock``, ``sync.lock``,
``host.lock``). The kernel drops it when the holder dies, so a crashed process never leaves the
directory locked. The holder writes its pid into the file so that the refused process can say
who holds it. The file itself stays (removing it would let two processes lock two different
files of the same name), and is never opened through a link.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from app.errors import AppError, HostAlreadyRunning, ModelsDirectoryLocked
from app.install.layout import ModelsLayout

_POLL_SECONDS = 0.05


def _holder_pid(lock_path: Path) -> str | None:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return None
    return pid or None


def _busy(lock_path: Path, pid: str | None) -> AppError:
    holder = f"process {pid}" if pid else "another process"
    return ModelsDirectoryLocked(
        f"{holder} is writing to {lock_path.parent.parent}; try again when it has finished"
    )


class DirectoryLock:
    """A held lock, from construction until `release()` (or the end of a ``with`` block)."""

    def __init__(
        self,
        lock_path: Path,
        *,
        wait_seconds: float = 0,
        refusal: Callable[[Path, str | None], AppError] = _busy,
    ) -> None:
        """`refusal(path, pid)`: the error when another holds it past `wait_seconds`."""
        self.path = lock_path
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
                    raise refusal(lock_path, _holder_pid(lock_path)) from None
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _host_running(lock_path: Path, pid: str | None) -> AppError:
    who = f"another host (pid {pid})" if pid else "another host"
    return HostAlreadyRunning(
        f"{who} is already running on {lock_path.parent.parent}; stop it first, "
        "or give this one another models.dir"
    )


def hold_host(models_dir: Path) -> DirectoryLock:
    """One long-running host per models directory: held for as long as the host runs.

    One-shot commands (``status``, ``install``, ``sync``, ``rollback``, ``--smoke``) never take
    it: they work beside a running host, and their writes are kept apart by the write lock.
    """
    return DirectoryLock(ModelsLayout(models_dir).host_lock, refusal=_host_running)
