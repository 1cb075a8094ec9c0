"""The download progress bar `python -m app sync` shows on a terminal."""

from __future__ import annotations

import io

from app.services.github_types import Artifact
from app.services.progress import download_progress


def artifact(size: int) -> Artifact:
    return Artifact.from_api(
        {"id": 7, "name": "trained-models", "size_in_bytes": size, "expired": False}
    )


def test_the_bar_follows_the_running_byte_count() -> None:
    stream = io.StringIO()
    bar = download_progress(artifact(4 << 20), stream)

    for received in (1 << 20, 3 << 20, 4 << 20):
        bar.update_to(received)
        assert bar.received == received
    bar.close()

    shown = stream.getvalue()
    assert "trained-models" in shown
    assert "/4.00M" in shown  # the artifact's size, in binary units
    assert shown.endswith("\r")  # leave=False: the bar is cleared when the download ends
