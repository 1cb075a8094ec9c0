"""A download progress bar for `python -m app sync` on a terminal (tqdm)."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from app.services.github_types import Artifact


class DownloadProgress:
    """A tqdm bar fed with the running byte count the GitHub client reports."""

    def __init__(self, artifact: Artifact, stream: TextIO) -> None:
        self._bar = tqdm(
            total=artifact.size_in_bytes or None,
            desc=artifact.name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            leave=False,
        )

    @property
    def received(self) -> int:
        return int(self._bar.n)

    def update_to(self, received: int) -> None:
        self._bar.update(received - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def download_progress(artifact: Artifact, stream: TextIO) -> DownloadProgress:
    return DownloadProgress(artifact, stream)
