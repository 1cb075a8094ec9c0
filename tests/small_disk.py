"""A models directory on a small tmpfs, so that a full disk is a real ENOSPC from the kernel.

Mounting needs root (CAP_SYS_ADMIN), which the development machine and CI have; elsewhere the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EMBEDDED_MODEL

SIZE_BYTES = 2 << 20


@dataclass
class SmallDisk:
    """A tmpfs of ``SIZE_BYTES`` mounted at ``root``; ``fill`` leaves only so much free."""

    root: Path

    @property
    def free(self) -> int:
        return shutil.disk_usage(self.root).free

    def fill(self, leave_free: int) -> Path:
        """Write a filler file so that about ``leave_free`` bytes stay free; return it."""
        filler = self.root / "filler"
        filler.write_bytes(b"\0" * max(0, self.free - leave_free))
        return filler

    def tree(self) -> list[str]:
        """Every file under the models directory's private space (downloads, work, staging)."""
        private = self.root / "models" / ".sync"
        return sorted(
            str(path.relative_to(private))
            for folder in ("downloads", "work", "staging")
            for path in (private / folder).rglob("*")
            if path.is_file()
        )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A tmpfs holding ``models/`` with the embedded default model; unmounted afterwards."""
    root = tmp_path / "small"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_BYTES}", "tmpfs", str(root)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (root / "models").mkdir()
        shutil.copyfile(EMBEDDED_MODEL, root / "models" / "unified_brain.onnx")
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
