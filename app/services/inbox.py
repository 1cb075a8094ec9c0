"""The local inbox: artifact zips dropped in ``models/inbox/`` go through the same pipeline.

For air-gapped hosts, and for trying the whole pipeline on a fresh clone without GitHub. A zip
is taken once it has not changed for ``SETTLE_SECONDS`` (write it elsewhere and ``mv`` it in to
be safe; names starting with ``.`` are ignored). Afterwards it is moved to ``processed/`` or
``rejected/``, a rejected one with ``<name>.reason.txt`` beside it saying why. A zip that could
not be judged (the models directory was busy, the disk full) stays in the inbox for the next
look. Any other error while handling one zip rejects that zip, with the error as its reason,
and the zips behind it go on: one poison zip never wedges the inbox.
"""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from app.errors import InsufficientDiskSpace, ModelsDirectoryLocked
from app.fsutil import write_bytes_atomically
from app.install.layout import ModelsLayout
from app.install.records import Origin
from app.services.installer import ArtifactInstaller, InstallOutcome
from app.services.monitoring import ProductionMonitoringService
from app.services.outcome import Outcome

SETTLE_SECONDS = 1.0
# The host's state, not the zip's: the zip stays in the inbox and is tried again next look.
_TRANSIENT = (InsufficientDiskSpace, ModelsDirectoryLocked, TimeoutError)


@dataclass(frozen=True, slots=True)
class InboxResult:
    """What became of one dropped zip."""

    name: str
    outcome: str
    reason: str
    moved_to: Path | None


class LocalInbox:
    """Watches ``models/inbox/`` and installs what is dropped there."""

    def __init__(
        self,
        models_dir: Path,
        pipeline: ArtifactInstaller,
        *,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        monitoring: ProductionMonitoringService | None = None,
    ) -> None:
        self.directory = ModelsLayout(models_dir).inbox_dir
        self._pipeline = pipeline
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._monitoring = monitoring

    def pending(self) -> list[Path]:
        """Settled zips, oldest first."""
        if not self.directory.is_dir():
            return []
        now = self._clock()
        settled: list[tuple[float, str, Path]] = []
        for path in self.directory.iterdir():
            if path.suffix.lower() != ".zip" or path.name.startswith("."):
                continue
            try:
                status = path.stat()
            except OSError:  # gone (or unreadable) since the listing: not ours to judge now
                continue
            if stat.S_ISREG(status.st_mode) and now - status.st_mtime >= SETTLE_SECONDS:
                settled.append((status.st_mtime, path.name, path))
        return [path for _, _, path in sorted(settled)]

    async def process_pending(self) -> list[InboxResult]:
        """Install every settled zip, one at a time through the shared pipeline."""
        results = []
        for path in await asyncio.to_thread(self.pending):
            async with self._pipeline.claim() as claimed:
                if not claimed:
                    break  # another process has the pipeline: next look
                results.append(await self._process(path))
        return results

    async def _judge(self, path: Path) -> InstallOutcome:
        """The installer's verdict on one zip; an error is this zip's outcome, never raised."""
        try:
            return await self._pipeline.install_zip(
                path, Origin(source="inbox", artifact_name=path.name)
            )
        except _TRANSIENT as error:
            return InstallOutcome(Outcome.FAILED, str(error) or type(error).__name__, "other")
        except Exception as error:
            logger.opt(exception=error).debug(f"Inbox zip {path.name} raised")
            reason = f"could not be handled: {type(error).__name__}: {error}"
            return InstallOutcome(Outcome.REJECTED, reason, "other")

    async def _process(self, path: Path) -> InboxResult:
        logger.info(f"🌐 [CLOUD-SYNC] Installing from the inbox: {path.name}")
        outcome = await self._judge(path)
        if self._monitoring is not None:  # counted as a polled artifact is
            self._monitoring.record_artifact(outcome.outcome.metric, outcome.reason_code)
        if outcome.outcome is Outcome.FAILED:
            logger.warning(f"⚠️ [CLOUD-SYNC] Inbox zip {path.name} kept for later: {outcome.reason}")
            return InboxResult(path.name, outcome.outcome, outcome.reason, None)
        folder = "rejected" if outcome.outcome is Outcome.REJECTED else "processed"
        try:
            moved = await asyncio.to_thread(self._move, path, folder, outcome.reason)
        except OSError as error:
            logger.error(
                f"❌ [CLOUD-SYNC] Inbox zip {path.name} {outcome.outcome} but not moved to "
                f"{folder}/ ({error.strerror or error}); it will be looked at again"
            )
            return InboxResult(path.name, outcome.outcome, outcome.reason, None)
        if folder == "rejected":
            logger.warning(f"⚠️ [CLOUD-SYNC] Inbox zip {path.name} rejected: {outcome.reason}")
        return InboxResult(path.name, outcome.outcome, outcome.reason, moved)

    def _move(self, path: Path, folder: str, reason: str) -> Path:
        target_dir = self.directory / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        if target.exists():  # the same name dropped twice: keep both
            target = target_dir / f"{path.stem}-{int(self._clock())}{path.suffix}"
        path.replace(target)
        if folder == "rejected":
            write_bytes_atomically(target_dir / f"{target.name}.reason.txt", reason + "\n")
        return target

    async def run_forever(self, sleep: Callable[[float], Awaitable[bool]]) -> None:
        """Look into the inbox every ``poll_seconds`` until `sleep` says the host is stopping."""
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                await self.process_pending()
            except Exception as error:  # the loop must outlive any one zip's surprise
                logger.opt(exception=error).error(f"❌ [CLOUD-SYNC] Inbox look failed: {error}")
            if await sleep(self._poll_seconds):
                return
