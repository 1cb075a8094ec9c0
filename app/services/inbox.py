"""The local inbox: artifact zips dropped in ``models/inbox/`` go through the same pipeline.

For air-gapped hosts, and for trying the whole pipeline on a fresh clone without GitHub. A zip
is taken once it has not changed for ``SETTLE_SECONDS`` (write it elsewhere and ``mv`` it in to
be safe; names starting with ``.`` are ignored). Afterwards it is moved to ``processed/`` or
``rejected/``, a rejected one with ``<name>.reason.txt`` beside it saying why. A zip that could
not be judged (the models directory was busy) stays in the inbox for the next look.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from app.fsutil import write_bytes_atomically
from app.install.records import Origin
from app.services.installer import ArtifactInstaller
from app.services.sync import CloudModelSynchronizationService

SETTLE_SECONDS = 1.0


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
        installer: ArtifactInstaller,
        pipeline: CloudModelSynchronizationService,
        *,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = models_dir / "inbox"
        self._installer = installer
        self._pipeline = pipeline
        self._poll_seconds = poll_seconds
        self._clock = clock

    def pending(self) -> list[Path]:
        """Settled zips, oldest first."""
        if not self.directory.is_dir():
            return []
        now = self._clock()
        zips = [
            path
            for path in self.directory.iterdir()
            if path.is_file() and path.suffix.lower() == ".zip" and not path.name.startswith(".")
        ]
        settled = [p for p in zips if now - p.stat().st_mtime >= SETTLE_SECONDS]
        return sorted(settled, key=lambda p: (p.stat().st_mtime, p.name))

    async def process_pending(self) -> list[InboxResult]:
        """Install every settled zip, one at a time through the shared pipeline."""
        results = []
        for path in await asyncio.to_thread(self.pending):
            async with self._pipeline.claim() as claimed:
                if not claimed:
                    break  # another process has the pipeline: next look
                results.append(await self._process(path))
        return results

    async def _process(self, path: Path) -> InboxResult:
        logger.info(f"🌐 [CLOUD-SYNC] Installing from the inbox: {path.name}")
        outcome = await self._installer.install_zip(
            path, Origin(source="inbox", artifact_name=path.name)
        )
        if outcome.outcome == "failed":
            logger.warning(f"⚠️ [CLOUD-SYNC] Inbox zip {path.name} kept for later: {outcome.reason}")
            return InboxResult(path.name, outcome.outcome, outcome.reason, None)
        folder = "rejected" if outcome.outcome == "rejected" else "processed"
        moved = await asyncio.to_thread(self._move, path, folder, outcome.reason)
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
