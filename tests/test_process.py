"""The entry point re-executes itself once with glibc's malloc tunable (see app/process.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = (
    "from app.process import reexec_with_malloc_tunables\n"
    "reexec_with_malloc_tunables()\n"
    "import os; print(os.environ['GLIBC_TUNABLES'], os.getpid())\n"
)


def probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_the_tunable_is_set_by_one_reexec_of_the_same_process() -> None:
    tunables, _pid = probe()
    assert tunables == "glibc.malloc.hugetlb=1"


def test_an_explicit_setting_is_left_alone() -> None:
    tunables, _pid = probe(GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert tunables == "glibc.malloc.arena_max=2"
