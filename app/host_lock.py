"""One long-running host per models directory.

A host (``python -m app`` / ``run``) holds an exclusive ``flock`` on ``models/.sync/host.lock``
for as long as it runs, with its pid written in the file, so that a second host on the same
directory is refused with a message naming the first. One-shot commands (``status``,
``install``, ``sync``, ``rollback``, ``--smoke``) never take it: they work beside a running host,
and their writes are kept apart by the write lock. The kernel drops the lock when its holder
dies, so a crashed host never keeps the next one out. The file itself stays (removing it would
let two hosts lock two different files of the same name).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from app.errors import HostAlreadyRunning
from app.install.layout import ModelsLayout


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if pid:
            return f"another host (pid {pid})"
    return "another host"


class HostLock:
    """Held from construction until `release()` (or the end of a ``with`` block)."""

    def __init__(self, models_dir: Path) -> None:
        self.path = ModelsLayout(models_dir).host_lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise HostAlreadyRunning(
                f"{holder} is already running on {models_dir}; stop it first, "
                "or give this one another models.dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd

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
