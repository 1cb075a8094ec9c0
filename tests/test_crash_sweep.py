"""kill -9 at every durable file operation of an install, a rollback and a sync.

A child process runs the real command with ``os.replace``, ``os.rename``, ``os.link``,
``os.unlink`` and ``os.fsync`` counted; at operation number N it kills itself with SIGKILL
(before the operation runs). For every N up to the number the command needs, the next start
must leave the disk exactly as before the command or exactly as after it: the active model, its
provenance, the backups and their records agreeing, and nothing under ``.sync/`` but state.
A second sweep pauses a sync at each operation instead, runs an ``install`` from another
process there, and lets the sync go on: no model that served may be lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.brain.brain import TradingBrain
from app.install.installer import ModelInstaller
from app.settings import load_settings
from tests.conftest import EMBEDDED_MODEL, ROOT
from tests.fakes.github import FakeGitHub
from tests.onnx_models import decision_model, save
from tests.sync_host import good_run

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from app.cli import main

    kill_at = int(os.environ.get("KILL_AT", "0"))
    pause_at = int(os.environ.get("PAUSE_AT", "0"))
    marker = os.environ.get("PAUSE_MARKER", "")
    count = 0

    def counted(name):
        real = getattr(os, name)
        def operation(*args, **kwargs):
            global count
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if count == pause_at:
                open(marker, "w").close()
                while os.path.exists(marker):
                    time.sleep(0.02)
            return real(*args, **kwargs)
        setattr(os, name, operation)

    for name in ("replace", "rename", "link", "unlink", "fsync"):
        counted(name)
    code = main(sys.argv[1:])
    sys.stderr.write(f"\\nOPERATIONS {{count}}\\n")
    sys.exit(code)
    """
).format(root=str(ROOT))

ALLOWED_UNDER_SYNC = {"state.json", "installed", "backups", "write.lock", "sync.lock", "host.lock"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_settings(folder: Path, **sections: dict[str, Any]) -> Path:
    document: dict[str, dict[str, Any]] = {
        "cloud_sync": {"min_interval_minutes": 0},
        "models": {"dir": "models", "lock_wait_seconds": 30},
        "ops": {"enabled": False},
    }
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def run_child(settings_file: Path, args: Sequence[str], **env: str) -> tuple[int, str]:
    environment = {k: v for k, v in os.environ.items() if "__" not in k and k != "GITHUB_TOKEN"}
    environment.update(APP_SETTINGS=str(settings_file), **env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stderr.decode(errors="replace")


def operations(stderr: str) -> int:
    line = next(line for line in stderr.splitlines() if line.startswith("OPERATIONS "))
    return int(line.split()[1])


def fingerprint(models_dir: Path) -> dict[str, Any]:
    """What must be exactly as before or exactly as after: models, provenance, backups."""
    provenance_file = models_dir / ".sync" / "installed" / "unified_brain.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else None
    backups = sorted(sha(p) for p in (models_dir / "backup").glob("*.onnx"))
    records_dir = models_dir / ".sync" / "backups"
    records = sorted(
        json.loads(p.read_text())["sha256"] for p in sorted(records_dir.glob("*.json"))
    )
    others = {
        str(p.relative_to(models_dir)): sha(p)
        for p in models_dir.rglob("*")
        if p.is_file()
        and p.parts[len(models_dir.parts)] not in {".sync", "backup"}
        and p.name != "unified_brain.onnx"
    }
    return {
        "active": sha(models_dir / "unified_brain.onnx"),
        "provenance": None
        if provenance is None
        else (provenance["sha256"], provenance["version"], provenance["source"]),
        "backups": backups,
        "records": records,
        "others": others,
    }


async def restart_and_check(models_dir: Path, settings_file: Path) -> dict[str, Any]:
    """Start as the host does (recovering), then check what must hold whatever happened."""
    settings = load_settings(settings_file)
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    await models.start()
    print_ = fingerprint(models_dir)
    serving = models.brain.snapshot.models["unified_brain"]
    assert serving.sha256 == print_["active"]
    assert serving.fallback_reason is None
    if print_["provenance"] is not None:
        assert print_["provenance"][0] == print_["active"]  # provenance names what serves
    assert print_["backups"] == print_["records"]  # every backup recorded, with its hash
    leftovers = {p.name for p in (models_dir / ".sync").iterdir()} - ALLOWED_UNDER_SYNC
    assert leftovers == set(), leftovers
    return print_


def fresh_models(folder: Path) -> Path:
    models_dir = folder / "models"
    if models_dir.exists():
        shutil.rmtree(models_dir)
    models_dir.mkdir(parents=True)
    shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
    return models_dir


async def sweep(
    work: Path, args: Sequence[str], prepare: Any = None, **sections: dict[str, Any]
) -> int:
    """Kill the command at each of its operations; returns how many there were."""
    models_dir = fresh_models(work)
    settings_file = write_settings(work, **sections)  # after: fresh_models empties models/ only
    if prepare is not None:
        await prepare(settings_file)
    before = fingerprint(models_dir)
    code, stderr = await run_child(settings_file, args)
    assert code == 0, stderr
    total = operations(stderr)
    after = await restart_and_check(models_dir, settings_file)
    assert after != before
    for kill_at in range(1, total + 1):
        models_dir = fresh_models(work)
        if prepare is not None:
            await prepare(settings_file)
        code, stderr = await run_child(settings_file, args, KILL_AT=str(kill_at))
        assert code == -9, f"operation {kill_at}: {stderr}"
        found = await restart_and_check(models_dir, settings_file)
        assert found in (before, after), f"killed at operation {kill_at} of {total}"
    return total


async def test_kill_9_at_every_operation_of_an_install(tmp_path: Path) -> None:
    candidate = save(decision_model(seed=5, version="v2"), tmp_path / "candidate.onnx")
    total = await sweep(tmp_path / "run", ["install", str(candidate)])
    assert total >= 10


async def test_kill_9_at_every_operation_of_a_rollback(tmp_path: Path) -> None:
    candidate = save(decision_model(seed=5, version="v2"), tmp_path / "candidate.onnx")

    async def install_first(settings_file: Path) -> None:
        code, stderr = await run_child(settings_file, ["install", str(candidate)])
        assert code == 0, stderr

    total = await sweep(tmp_path / "run", ["rollback"], prepare=install_first)
    assert total >= 10


@pytest.fixture
def github_sections(fake: FakeGitHub) -> dict[str, Any]:
    return {
        "api_url": fake.api_url,
        "token": fake.token,
        "owner": fake.owner,
        "repository": fake.repository,
    }


async def test_kill_9_at_every_operation_of_a_sync(
    fake: FakeGitHub, github_sections: dict[str, Any], tmp_path: Path
) -> None:
    good_run(fake, "v-sync")
    total = await sweep(tmp_path / "run", ["sync", "--force"], github=github_sections)
    assert total >= 10


async def test_an_install_between_any_two_steps_of_a_sync_loses_no_model(
    fake: FakeGitHub, github_sections: dict[str, Any], tmp_path: Path
) -> None:
    good_run(fake, "v-sync")
    candidate = save(decision_model(seed=7, version="v-cli"), tmp_path / "cli.onnx")
    work = tmp_path / "run"
    models_dir = fresh_models(work)
    settings_file = write_settings(work, github=github_sections)
    code, stderr = await run_child(settings_file, ["sync", "--force"])
    assert code == 0, stderr
    total = operations(stderr)
    embedded, cli_model = sha(EMBEDDED_MODEL), sha(candidate)
    for pause_at in range(1, total + 1):
        models_dir = fresh_models(work)
        (models_dir / ".sync").mkdir()
        marker = models_dir / ".sync" / "paused"
        sync = asyncio.create_task(
            run_child(
                settings_file,
                ["sync", "--force"],
                PAUSE_AT=str(pause_at),
                PAUSE_MARKER=str(marker),
            )
        )
        while not marker.exists() and not sync.done():
            await asyncio.sleep(0.02)
        installed = 1
        if marker.exists():
            install = asyncio.create_task(run_child(settings_file, ["install", str(candidate)]))
            # The install either finishes now, or waits for the sync's write lock.
            await asyncio.wait({install}, timeout=3)
            marker.unlink()
            await install
        code, stderr = await sync
        assert code == 0, f"paused at {pause_at}: {stderr}"
        found = await restart_and_check(models_dir, settings_file)
        kept = {found["active"], *found["backups"]}
        served = {embedded, cli_model} if installed == 0 else {embedded}
        assert served <= kept, f"paused at operation {pause_at} of {total}"
