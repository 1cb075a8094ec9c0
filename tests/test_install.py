"""The install transaction as the one writer of models/: private state out of an artifact's
reach, immutable verified backups, provenance installed with its model, recovery from a bad
active file, and one version per model wherever it is read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.brain.brain import TradingBrain
from app.brain.models import Candidate
from app.errors import ModelError, ModelsDirectoryLocked
from app.install.installer import ModelInstaller
from app.install.lock import DirectoryLock
from app.install.records import Origin
from app.install.transaction import Transaction
from app.services.installer import ArtifactInstaller
from app.services.state import StateStore
from app.settings import Settings
from tests.artifacts import model_bytes, model_members, zip_bytes
from tests.conftest import EMBEDDED_MODEL, make_settings, start_models
from tests.metrics import labels_of
from tests.onnx_models import decision_model, save
from tests.ops_stack import ops_settings, running_ops
from tests.test_cli import app_environment, write_settings

SLOT = "unified_brain"
EMBEDDED = "embedded-1"
FEATURES = [0.0] * 16


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def serving(models: ModelInstaller) -> str:
    return models.brain.decide(FEATURES).versions[SLOT]


async def install_zip(models: ModelInstaller, zip_path: Path) -> Any:
    settings = make_settings(models.layout.root)
    pipeline = ArtifactInstaller(settings, StateStore(models.layout.root), models)
    return await pipeline.install_zip(zip_path, Origin(source="inbox", artifact_name=zip_path.name))


# -- the private state is out of an artifact's reach ------------------------------------------


PLANTS = {
    "journal": ".sync/install-journal.json",
    "quarantine": ".sync/quarantine.json",
    "provenance": ".sync/installed/zz.json",
    "backup": "backup/unified_brain_99999999_999999.onnx",
    "inbox": "inbox/processed/evil.json",
    "hidden": "rl/.secret.json",
}


@pytest.mark.parametrize("kind", list(PLANTS))
async def test_an_artifact_cannot_plant_files_in_reserved_folders(
    kind: str, models: ModelInstaller, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    planted = json.dumps({"final": str(outside), "transaction": "x"}).encode()
    members = [*model_members("v2"), (PLANTS[kind], planted)]
    zip_path = tmp_path / "plant.zip"
    zip_path.write_bytes(zip_bytes(members))
    before = tree(models.layout.root)

    outcome = await install_zip(models, zip_path)

    assert outcome.outcome == "rejected"
    assert "may not be installed" in outcome.reason
    assert tree(models.layout.root) == before
    assert outside.read_text() == "untouched"
    assert serving(models) == EMBEDDED


async def test_a_planted_journal_is_set_aside_and_nothing_is_touched(
    settings: Settings, tmp_path: Path, logs: list[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    layout_root = settings.models_dir
    (layout_root / ".sync").mkdir(exist_ok=True)
    journal = {
        "transaction": "abc",
        "entries": [
            {"final": str(victim), "staged": "x", "previous": None, "sha256": sha(victim)},
        ],
        "backups": ["../../victim.txt"],
    }
    (layout_root / ".sync" / "install-journal.json").write_text(json.dumps(journal))

    models = await start_models(settings)

    assert victim.read_text() == "keep me"
    assert serving(models) == EMBEDDED
    assert (layout_root / ".sync" / "install-journal.json.untrusted").exists()
    assert any("did not write" in line for line in logs)


async def test_a_backup_name_that_does_not_parse_is_ignored(
    models: ModelInstaller, model_file: Any, logs: list[str]
) -> None:
    backup_dir = models.layout.backup_dir
    backup_dir.mkdir()
    (backup_dir / "unified_brain_99999999_999999.onnx").write_bytes(b"not a moment")
    assert await models.brain.reload_models(model_file(seed=5, version="v2"))
    assert [p.name for p in models.backups()] != []
    assert "unified_brain_99999999_999999.onnx" not in [p.name for p in models.backups()]
    assert (await models.rollback()).ok
    assert any("not a backup's name" in line for line in logs)


# -- backups are immutable and verified ---------------------------------------------------------


async def test_an_in_place_copy_over_the_active_file_after_a_rollback_keeps_every_backup(
    models: ModelInstaller, model_file: Any
) -> None:
    assert await models.brain.reload_models(model_file("a.onnx", seed=1, version="v-a"))
    assert (await models.rollback()).ok
    hashes = {p.name: sha(p) for p in models.backups()}
    active = models.layout.path_of("unified_brain.onnx")

    with active.open("r+b") as stream:  # what `cp other.onnx models/unified_brain.onnx` does
        stream.write(model_file("other.onnx", seed=9).read_bytes())

    assert {p.name: sha(p) for p in models.backups()} == hashes
    for backup in models.backups():
        record = models.records.backup(backup.name)
        assert record is not None
        assert record.sha256 == sha(backup)


async def test_a_corrupt_backup_is_skipped_by_the_default_rollback(
    models: ModelInstaller, model_file: Any
) -> None:
    assert await models.brain.reload_models(model_file("a.onnx", seed=1, version="v-a"))
    assert await models.brain.reload_models(model_file("b.onnx", seed=2, version="v-b"))
    newest, oldest = models.backups()  # v-a, then the embedded model
    newest.write_bytes(b"bit rot" * 10)

    result = await models.rollback()

    assert result.ok
    assert serving(models) == EMBEDDED
    assert oldest.exists()


async def test_a_refused_file_on_disk_is_never_backed_up(
    models: ModelInstaller, model_file: Any
) -> None:
    active = models.layout.path_of("unified_brain.onnx")
    bad = save(decision_model(n_features=12), active.with_name("tmp.onnx"))
    bad.replace(active)
    assert await models.refresh_from_disk() == []  # refused: the embedded model still serves

    assert await models.brain.reload_models(model_file(seed=5, version="v2"))

    assert models.backups() == []  # the refused file was not backed up
    assert serving(models) == "v2"


async def test_retention_counts_only_recorded_backups_and_keeps_the_newest(
    models_dir: Path, model_file: Any
) -> None:
    settings = make_settings(models_dir, models={"backup_retention": 1})
    models = await start_models(settings)
    for number in range(3):
        version = f"v{number}"
        assert await models.brain.reload_models(model_file(f"{version}.onnx", seed=number))
    [kept] = models.backups()
    record = models.records.backup(kept.name)
    assert record is not None
    assert record.sha256 == sha(kept)
    assert len(list(models.layout.backup_records_dir.iterdir())) == 1


# -- recovery from a bad active file --------------------------------------------------------------


async def test_a_bad_active_file_starts_on_the_newest_valid_backup(
    settings: Settings, model_file: Any
) -> None:
    first = await start_models(settings)
    assert await first.brain.reload_models(model_file(seed=5, version="v2"))
    active = settings.models_dir / "unified_brain.onnx"
    active.write_bytes(b"garbage" * 100)

    models = await start_models(settings)

    assert serving(models) == EMBEDDED  # the backup taken when v2 was installed
    [(slot, why)] = models.disk_differences().items()
    assert slot == SLOT
    assert "cannot serve" in why
    # install and rollback both work, and mend the file
    assert await models.brain.reload_models(model_file("c.onnx", seed=6, version="v3"))
    assert serving(models) == "v3"
    assert models.disk_differences() == {}


async def test_on_bad_active_refuse_refuses_a_strict_start(models_dir: Path) -> None:
    (models_dir / "unified_brain.onnx").write_bytes(b"garbage" * 100)
    settings = make_settings(models_dir, models={"on_bad_active": "refuse"})
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    with pytest.raises(ModelError, match="cannot start"):
        await models.start(strict=True)


async def test_the_watch_does_not_rebuild_a_refused_file_until_it_changes(
    models: ModelInstaller, logs: list[str]
) -> None:
    active = models.layout.path_of("unified_brain.onnx")
    save(decision_model(n_features=12), active.with_name("tmp.onnx")).replace(active)

    for _ in range(3):
        assert await models.refresh_from_disk() == []

    assert sum("changed on disk but refused" in line for line in logs) == 1
    assert "refused" in models.disk_differences()[SLOT]


# -- one version rule -----------------------------------------------------------------------------


async def test_the_same_model_has_one_version_in_every_process_and_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    installing = await start_models(settings)
    watching = await start_models(settings)
    # metadata.json says "v3-inbox"; the model's own ONNX metadata says "v3"
    members = model_members("v3-inbox", model=model_bytes("v3", seed=3))
    zip_path = tmp_path / "v3.zip"
    zip_path.write_bytes(zip_bytes(members))

    assert (await install_zip(installing, zip_path)).outcome == "installed"
    assert await watching.refresh_from_disk() == [SLOT]
    restarted = await start_models(settings)

    assert {serving(installing), serving(watching), serving(restarted)} == {"v3-inbox"}
    provenance = json.loads(
        (settings.models_dir / ".sync/installed/unified_brain.json").read_text()
    )
    assert provenance["version"] == "v3-inbox"


# -- leftovers ------------------------------------------------------------------------------------


async def test_a_start_removes_every_leftover_of_interrupted_work(settings: Settings) -> None:
    sync = settings.models_dir / ".sync"
    for folder in ("staging/abc", "downloads", "work/def"):
        (sync / folder).mkdir(parents=True)
        (sync / folder / "big.bin").write_bytes(b"\0" * 4096)

    await start_models(settings)

    assert not any((sync / name).exists() for name in ("staging", "downloads", "work"))


async def test_a_read_only_start_reports_what_the_next_start_will_serve(
    settings: Settings, model_file: Any
) -> None:
    models = await start_models(settings)
    assert await models.brain.reload_models(model_file(seed=5, version="v2"))
    shutil.rmtree(settings.models_dir / ".sync" / "staging", ignore_errors=True)
    active = settings.models_dir / "unified_brain.onnx"
    active.write_bytes(b"garbage" * 100)

    reader = ModelInstaller(settings, TradingBrain(settings.brain))
    await reader.start(recover=False)

    assert serving(reader) == EMBEDDED
    assert active.read_bytes() == b"garbage" * 100  # read-only: nothing written


# -- the command line with a bad active file ------------------------------------------------------


def run_cli(settings_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=settings_file.parent,
        env=app_environment(APP_SETTINGS=str(settings_file)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_bad_active_file_locks_no_command_out(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
    settings_file = write_settings(tmp_path)
    candidate = save(decision_model(seed=5, version="v2"), tmp_path / "v2.onnx")
    assert run_cli(settings_file, "install", str(candidate)).returncode == 0
    (models_dir / "unified_brain.onnx").write_bytes(b"garbage" * 100)

    status = run_cli(settings_file, "status")
    smoke = run_cli(settings_file, "--smoke")
    rollback = run_cli(settings_file, "rollback")
    after = run_cli(settings_file, "status", "--json")

    assert status.returncode == 0, status.stderr
    assert "problem: active file" in status.stdout
    assert "serving backup unified_brain_" in status.stdout
    assert smoke.returncode == 1
    assert "smoke test failed: active file" in smoke.stderr
    assert "Traceback" not in smoke.stderr + status.stderr + rollback.stderr
    assert rollback.returncode == 0, rollback.stderr
    report = json.loads(after.stdout)["models"][SLOT]
    assert report["version"] == EMBEDDED
    assert report["problem"] is None
    assert report["sha256"] == sha(models_dir / "unified_brain.onnx")


async def test_the_version_is_the_same_in_status_and_metrics_of_another_process(
    tmp_path: Path,
) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
    settings_file = write_settings(tmp_path)
    zip_path = tmp_path / "v3.zip"
    zip_path.write_bytes(zip_bytes(model_members("v3-inbox", model=model_bytes("v3", seed=3))))
    installing = await start_models(make_settings(models_dir))
    assert (await install_zip(installing, zip_path)).outcome == "installed"

    status = json.loads(run_cli(settings_file, "status", "--json").stdout)
    async with running_ops(
        ops_settings(models_dir)
    ) as stack:  # another host: its own container and brain
        [info] = labels_of(await stack.metrics(), "trading_brain_active_model_info")

    assert status["models"][SLOT]["version"] == "v3-inbox"
    assert info["version"] == "v3-inbox"


async def test_a_record_whose_backup_is_gone_is_dropped_at_start(
    settings: Settings, model_file: Any
) -> None:
    models = await start_models(settings)
    assert await models.brain.reload_models(model_file(seed=5, version="v2"))
    [backup] = models.backups()
    backup.unlink()  # as a prune killed between deleting the file and its record would leave

    restarted = await start_models(settings)

    assert not list(restarted.layout.backup_records_dir.glob("*.json"))


# -- attacks on the one writer (links, planted journals, damaged files) ---------------------------


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(
    settings: Settings, tmp_path: Path
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    sync = settings.models_dir / ".sync"
    sync.mkdir()
    (sync / "write.lock").symlink_to(target)

    with pytest.raises(ModelsDirectoryLocked, match="cannot be a lock file"):
        DirectoryLock(sync / "write.lock")
    assert target.read_text() == "keep"


async def test_a_planted_journal_cannot_reach_through_a_link_or_remove_a_backup(
    settings: Settings, tmp_path: Path, model_file: Any
) -> None:
    models = await start_models(settings)
    assert await models.brain.reload_models(model_file(seed=5, version="v2"))
    [backup] = models.backups()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("keep")
    (settings.models_dir / "data").symlink_to(outside)
    journal = {
        "transaction": "abc",
        "entries": [
            {
                "final": "data/x",
                "staged": ".sync/staging/abc/s",
                "previous": None,
                "sha256": sha(outside / "x"),
            }
        ],
        "backups": [f"backup/{backup.name}"],
    }
    (settings.models_dir / ".sync" / "install-journal.json").write_text(json.dumps(journal))

    await start_models(settings)

    assert (outside / "x").read_text() == "keep"
    assert backup.exists()


async def test_retention_keeps_the_newest_intact_backup_when_newer_ones_are_corrupt(
    models_dir: Path, model_file: Any
) -> None:
    models = await start_models(make_settings(models_dir))
    assert await models.brain.reload_models(model_file("a.onnx", seed=1, version="v-a"))
    assert await models.brain.reload_models(model_file("b.onnx", seed=2, version="v-b"))
    newest, intact = models.backups()  # v-a, then the embedded model
    newest.write_bytes(b"bit rot" * 10)
    (models_dir / "unified_brain.onnx").write_bytes(b"garbage")

    keep_one = make_settings(models_dir, models={"backup_retention": 1})
    restarted = await start_models(keep_one)  # serves the intact backup; prunes at start
    assert serving(restarted) == EMBEDDED
    assert await restarted.brain.reload_models(model_file("c.onnx", seed=3, version="v-c"))

    assert intact.exists(), "retention deleted the only intact backup"
    assert sha(intact) == sha(EMBEDDED_MODEL)


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
async def test_an_active_file_with_another_name_is_backed_up_by_copy(
    kind: str, models_dir: Path, tmp_path: Path, model_file: Any
) -> None:
    mine = tmp_path / "mine.onnx"
    shutil.copyfile(EMBEDDED_MODEL, mine)
    active = models_dir / "unified_brain.onnx"
    active.unlink()
    if kind == "symlink":
        active.symlink_to(mine)
    else:
        os.link(mine, active)
    models = await start_models(make_settings(models_dir))

    assert await models.brain.reload_models(model_file(seed=5, version="v2"))
    [backup] = models.backups()
    with mine.open("r+b") as stream:  # the user rewrites their own file in place
        stream.write(b"\0" * 64)

    assert sha(backup) == sha(EMBEDDED_MODEL)
    assert not active.is_symlink()
    assert backup.stat().st_nlink == 1


async def test_reinstalling_the_serving_model_mends_a_damaged_active_file(
    models: ModelInstaller, model_file: Any
) -> None:
    candidate = model_file(seed=5, version="v2")
    assert await models.brain.reload_models(candidate)
    active = models.layout.path_of("unified_brain.onnx")
    with active.open("r+b") as stream:
        stream.write(b"garbage")  # rewritten in place, so the watch sees the same file

    assert await models.brain.reload_models(candidate)

    assert sha(active) == sha(candidate)


async def test_a_fallback_keeps_the_version_recorded_with_its_backup(
    settings: Settings, tmp_path: Path
) -> None:
    first = await start_models(settings)
    zip_path = tmp_path / "meta.zip"
    zip_path.write_bytes(zip_bytes(model_members("v-meta", model=model_bytes("v-own", seed=8))))
    assert (await install_zip(first, zip_path)).outcome == "installed"
    second = await start_models(settings)
    assert await second.brain.reload_models(save(decision_model(seed=9), tmp_path / "n.onnx"))
    (settings.models_dir / "unified_brain.onnx").write_bytes(b"garbage")

    restarted = await start_models(settings)

    assert serving(restarted) == "v-meta"


async def test_a_read_only_start_after_an_interrupted_install_shows_what_recovery_restores(
    models: ModelInstaller, settings: Settings, model_file: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def die_after_renames(self: Transaction) -> None:
        original_apply(self)
        raise KeyboardInterrupt  # stands for kill -9: nothing after this runs

    original_apply = Transaction.apply
    monkeypatch.setattr(Transaction, "apply", die_after_renames)
    monkeypatch.setattr(Transaction, "abort", lambda self: None)  # a killed process undoes nothing
    with pytest.raises(KeyboardInterrupt):
        await models.swap_in([Candidate(SLOT, model_file(seed=5, version="v2"))])
    monkeypatch.undo()
    assert (settings.models_dir / ".sync" / "install-journal.json").exists()

    reader = ModelInstaller(settings, TradingBrain(settings.brain))
    await reader.start(recover=False)
    writer = await start_models(settings)

    assert serving(reader) == serving(writer) == EMBEDDED


def test_a_bad_active_file_without_a_backup_is_repaired_by_install(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "unified_brain.onnx").write_bytes(b"garbage" * 100)  # and no backup at all
    settings_file = write_settings(tmp_path)
    candidate = save(decision_model(seed=5, version="v2"), tmp_path / "v2.onnx")

    status = run_cli(settings_file, "status")
    rollback = run_cli(settings_file, "rollback")
    install = run_cli(settings_file, "install", str(candidate))
    after = json.loads(run_cli(settings_file, "status", "--json").stdout)["models"][SLOT]

    assert status.returncode == 0, status.stderr
    assert "install a model to repair it" in status.stdout
    assert rollback.returncode == 1
    assert "no backup" in rollback.stderr
    assert install.returncode == 0, install.stderr
    assert after["version"] == "v2"
    assert after["problem"] is None
    assert "Traceback" not in status.stderr + rollback.stderr + install.stderr


async def test_an_artifact_without_a_model_is_rejected_as_no_models(
    models: ModelInstaller, tmp_path: Path
) -> None:
    zip_path = tmp_path / "empty.zip"
    zip_path.write_bytes(zip_bytes([("notes/metadata.json", b'{"version": "v9"}')]))

    outcome = await install_zip(models, zip_path)

    assert outcome.outcome == "rejected"
    assert outcome.reason_code == "no_models"
