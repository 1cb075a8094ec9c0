"""Every install path of the model installer refuses a quarantined model: a swap from any
source, a repair, a file copied over the active one by hand; a rollback passes over one. Real
brains on real model files; what is checked is the model that decides and the disk."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.brain.brain import TradingBrain
from app.brain.models import Candidate
from app.errors import reason_code_of
from app.install.installer import ModelInstaller
from app.install.quarantine import QuarantineEntry
from app.settings import Settings

SLOT = "unified_brain"
EMBEDDED = "embedded-1"
FEATURES = [0.0] * 16
WHY = "rolled back by the canary judge: net -2.1% vs +0.3%"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def serving(models: ModelInstaller) -> str:
    return models.brain.decide(FEATURES).versions[SLOT]


def quarantine(models: ModelInstaller, digest: str, version: str = "v2") -> QuarantineEntry:
    entry = QuarantineEntry(sha256=digest, slot=SLOT, version=version, why=WHY)
    models.quarantine.add(entry)
    return entry


def files(models: ModelInstaller) -> dict[str, str]:
    """The models directory but its private state: the active models and the backups."""
    root = models.layout.root
    return {
        str(path.relative_to(root)): sha(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".sync" not in path.relative_to(root).parts
    }


@pytest.fixture
def candidate(model_file: Any) -> Path:
    path: Path = model_file("v2.onnx", seed=5, version="v2")
    return path


# -- swaps -------------------------------------------------------------------------------------


async def test_a_quarantined_model_is_refused_and_the_old_one_keeps_serving(
    models: ModelInstaller, candidate: Path
) -> None:
    quarantine(models, sha(candidate))
    before = files(models)

    result = await models.swap_in([Candidate(SLOT, candidate)])

    assert not result.ok
    assert not result.retryable
    assert reason_code_of(result.error) == "quarantined"
    short = sha(candidate)[:12]
    assert result.reason.startswith(f"model sha256 {short} (version v2) is quarantined: {WHY}")
    assert result.reason.endswith(f"release it with: python -m app quarantine release {short}")
    assert serving(models) == EMBEDDED
    assert files(models) == before  # nothing installed, nothing backed up
    assert not await models.brain.reload_models(candidate)  # the seed's entry point too


async def test_a_sha256_the_caller_gives_is_refused_before_validation(
    models: ModelInstaller, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "notes.onnx"
    not_a_model.write_bytes(b"validation would refuse this as load_failed\n")
    quarantine(models, sha(not_a_model))

    result = await models.swap_in([Candidate(SLOT, not_a_model, sha256=sha(not_a_model))])

    assert reason_code_of(result.error) == "quarantined"


async def test_the_lifecycle_may_install_a_quarantined_model_on_purpose(
    models: ModelInstaller, candidate: Path
) -> None:
    quarantine(models, sha(candidate))

    result = await models.swap_in([Candidate(SLOT, candidate)], allow_quarantined=True)

    assert result.ok, result.reason
    assert serving(models) == "v2"


async def test_a_released_model_installs(models: ModelInstaller, candidate: Path) -> None:
    quarantine(models, sha(candidate))
    assert not (await models.swap_in([Candidate(SLOT, candidate)])).ok

    assert models.quarantine.release(sha(candidate)[:12]) is not None

    assert (await models.swap_in([Candidate(SLOT, candidate)])).ok
    assert serving(models) == "v2"


async def test_a_slot_being_repaired_refuses_a_quarantined_model(
    settings: Settings, candidate: Path, model_file: Any
) -> None:
    active = settings.models_dir / "unified_brain.onnx"
    active.write_bytes(b"broken")  # nothing can serve it, and there is no backup
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    await models.start(repairable=True)
    assert SLOT in models.unservable
    quarantine(models, sha(candidate))

    refused = await models.swap_in([Candidate(SLOT, candidate)])
    repaired = await models.swap_in([Candidate(SLOT, model_file("v3.onnx", seed=6))])

    assert reason_code_of(refused.error) == "quarantined"
    assert repaired.ok, repaired.reason
    assert sha(active) != sha(candidate)


async def test_an_unreadable_quarantine_refuses_every_install_until_repaired(
    models: ModelInstaller, candidate: Path
) -> None:
    models.layout.sync_dir.mkdir(exist_ok=True)
    models.quarantine.path.write_text("{not json")

    result = await models.swap_in([Candidate(SLOT, candidate)])

    assert not result.ok
    assert result.retryable  # the host's state, not the model's: tried again later
    assert "quarantine file" in result.reason
    assert "unreadable" in result.reason
    assert serving(models) == EMBEDDED
    models.quarantine.path.unlink()
    assert (await models.swap_in([Candidate(SLOT, candidate)])).ok


# -- a file replaced on disk by hand -----------------------------------------------------------------


async def test_a_quarantined_file_copied_over_the_active_one_is_refused_and_remembered(
    models: ModelInstaller, candidate: Path, logs: list[str]
) -> None:
    quarantine(models, sha(candidate))
    active = models.brain.snapshot.models[SLOT].path
    shutil.copyfile(candidate, active.with_name("copy.tmp"))
    active.with_name("copy.tmp").replace(active)

    assert await models.refresh_from_disk() == []
    assert await models.refresh_from_disk() == []  # remembered: not rebuilt on every look

    assert serving(models) == EMBEDDED
    refusals = [line for line in logs if "changed on disk but refused" in line]
    assert len(refusals) == 1
    assert "is quarantined" in refusals[0]
    assert "refused" in models.disk_differences()[SLOT]


async def test_an_install_does_not_catch_up_with_a_quarantined_file_on_disk(
    models: ModelInstaller, candidate: Path, model_file: Any
) -> None:
    quarantine(models, sha(candidate))
    active = models.brain.snapshot.models[SLOT].path
    shutil.copyfile(candidate, active)  # by hand, and the watch has not looked yet

    result = await models.swap_in([Candidate(SLOT, model_file("v3.onnx", seed=6, version="v3"))])

    assert result.ok, result.reason
    assert serving(models) == "v3"
    assert sha(candidate) not in {sha(path) for path in models.backups()}


# -- rollback --------------------------------------------------------------------------------------


@pytest.fixture
async def two_installed(models: ModelInstaller, model_file: Any) -> list[Path]:
    """v1 then v2 installed: v2 serves; the backups hold v1 (newest) and the embedded model."""
    installed = [model_file(f"v{n}.onnx", seed=10 + n, version=f"v{n}") for n in (1, 2)]
    for path in installed:
        assert (await models.swap_in([Candidate(SLOT, path)])).ok
    return installed


async def test_rollback_passes_over_a_quarantined_backup(
    models: ModelInstaller, two_installed: list[Path], logs: list[str]
) -> None:
    v1, _ = two_installed
    quarantine(models, sha(v1), "v1")

    result = await models.rollback()

    assert result.ok, result.reason
    assert serving(models) == EMBEDDED  # the older backup, v1 passed over
    [line] = [line for line in logs if "Passing over backup" in line]
    assert WHY in line


async def test_rollback_to_a_named_quarantined_backup_is_refused_saying_why(
    models: ModelInstaller, two_installed: list[Path]
) -> None:
    v1, _ = two_installed
    quarantine(models, sha(v1), "v1")
    backup = models.backups()[0]
    assert sha(backup) == sha(v1)

    result = await models.rollback(backup=backup.name)

    assert not result.ok
    assert "is quarantined" in result.reason
    assert WHY in result.reason
    assert serving(models) == "v2"


async def test_rollback_with_every_backup_quarantined_says_so(
    models: ModelInstaller, two_installed: list[Path]
) -> None:
    for backup in models.backups():
        quarantine(models, sha(backup))

    result = await models.rollback()

    assert not result.ok
    assert "(2 quarantined passed over)" in result.reason
    assert serving(models) == "v2"
