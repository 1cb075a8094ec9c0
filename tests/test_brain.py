"""TradingBrain and its installer with real ONNX models on real files: reloads, refusals,
failures, concurrency, rollbacks, backups and the watch of the disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.brain.brain import TradingBrain
from app.brain.models import Candidate
from app.install import installer as installer_module
from app.install.installer import ModelInstaller
from app.install.lock import DirectoryLock
from app.install.records import Origin
from app.install.transaction import Transaction
from app.settings import Settings
from tests.conftest import make_settings
from tests.onnx_models import decision_model, save


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(models_dir: Path) -> set[str]:
    """Every file under the models directory, but the lock file (it is meant to stay)."""
    return {
        str(p.relative_to(models_dir))
        for p in models_dir.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


CLI = Origin(source="cli")


def new_models(settings: Settings, **kwargs: Any) -> ModelInstaller:
    """A brain and its installer, not started."""
    return ModelInstaller(settings, TradingBrain(settings.brain), **kwargs)


async def test_decides_with_the_version_that_made_the_decision(brain: TradingBrain) -> None:
    decision = brain.decide(np.full(16, 3.0, dtype=np.float32))
    assert decision.versions == {"unified_brain": "embedded-1"}
    assert decision.action in {"sell", "hold", "buy"}
    assert decision.confidence == max(decision.probabilities)
    assert sum(decision.probabilities) == pytest.approx(1.0, abs=1e-5)


async def test_low_confidence_means_hold(settings: Settings) -> None:
    # A random linear model gives near-uniform probabilities on all-zero features (its logits
    # are its small biases): far under the 0.65 threshold. The embedded model is trained, and
    # all zeros is no market it has seen.
    save(decision_model(seed=0), settings.models_dir / "unified_brain.onnx")
    models = new_models(settings)
    await models.start()
    decision = models.brain.decide([0.0] * 16)
    assert decision.confidence < 0.65
    assert decision.action == "hold"


async def test_decide_rejects_the_wrong_number_of_features(brain: TradingBrain) -> None:
    with pytest.raises(ValueError, match="expected 16 features, got 3"):
        brain.decide([1.0, 2.0, 3.0])


async def test_reload_installs_backs_up_and_swaps(
    settings: Settings, model_file: Any, logs: list[str]
) -> None:
    models = new_models(settings, clock=FakeClock())
    await models.start()
    brain = models.brain
    active = settings.models_dir / "unified_brain.onnx"
    old_bytes = active.read_bytes()
    candidate = model_file(seed=5, version="v2")

    assert await brain.reload_models(candidate) is True

    assert brain.decide([1.0] * 16).versions == {"unified_brain": "v2"}
    assert active.read_bytes() == candidate.read_bytes()
    backups = list((settings.models_dir / "backup").iterdir())
    assert [b.name for b in backups] == ["unified_brain_20250108_143023.onnx"]
    assert backups[0].read_bytes() == old_bytes
    assert any(f"🔄 [MODEL-RELOAD] Starting model reload: {candidate}" in line for line in logs)
    assert any(f"💾 [MODEL-RELOAD] Backup created: {backups[0]}" in line for line in logs)
    assert any("✅ [MODEL-RELOAD] Model reloaded successfully" in line for line in logs)
    assert not (settings.models_dir / ".sync" / "staging").exists()


async def test_version_falls_back_to_the_file_hash(brain: TradingBrain, model_file: Any) -> None:
    candidate = model_file(seed=6)  # no version in its metadata
    assert await brain.reload_models(candidate)
    assert brain.decide([0.0] * 16).versions["unified_brain"] == sha(candidate)[:12]


def _truncated(path: Path) -> Path:
    data = save(decision_model(seed=9), path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_MODELS = {
    "wrong input width": lambda p: save(decision_model(n_features=15), p),
    "renamed input": lambda p: save(decision_model(input_name="x"), p),
    "wrong output width": lambda p: save(decision_model(n_actions=4), p),
    "renamed output": lambda p: save(decision_model(output_name="scores"), p),
    "integer input": lambda p: save(decision_model(integer_input=True), p),
    "NaN outputs": lambda p: save(decision_model(nan_output=True), p),
    "not probabilities": lambda p: save(decision_model(softmax=False, seed=3), p),
    "truncated file": _truncated,
    "empty file": lambda p: (p.write_bytes(b""), p)[1],
    "garbage bytes": lambda p: (p.write_bytes(b"not a model" * 100), p)[1],
    "missing file": lambda p: p,
    "directory": lambda p: (p.mkdir(), p)[1],
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
async def test_bad_models_are_refused_and_nothing_changes(
    kind: str, brain: TradingBrain, models: ModelInstaller, settings: Settings, tmp_path: Path
) -> None:
    candidate = BAD_MODELS[kind](tmp_path / "bad.onnx")
    active = settings.models_dir / "unified_brain.onnx"
    before_bytes, before_files = active.read_bytes(), listing(settings.models_dir)

    result = await models.swap_in([Candidate("unified_brain", candidate)], origin=CLI)

    assert result.ok is False
    assert result.reason  # says why
    assert "\n" not in result.reason
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}
    assert active.read_bytes() == before_bytes
    assert listing(settings.models_dir) == before_files


async def test_refusal_reasons_name_the_problem(
    brain: TradingBrain, models: ModelInstaller, tmp_path: Path
) -> None:
    reasons = {}
    for kind in (
        "wrong input width",
        "renamed input",
        "integer input",
        "NaN outputs",
        "empty file",
    ):
        result = await models.swap_in(
            [Candidate("unified_brain", BAD_MODELS[kind](tmp_path / f"{kind}.onnx"))]
        )
        reasons[kind] = result.reason
    assert "dimension 1 is 15, expected 16" in reasons["wrong input width"]
    assert "input 'features' is missing" in reasons["renamed input"]
    assert "tensor(int64)" in reasons["integer input"]
    assert "not finite" in reasons["NaN outputs"]
    assert "is empty" in reasons["empty file"]


async def test_installing_the_serving_model_again_changes_nothing(
    brain: TradingBrain, models: ModelInstaller, settings: Settings
) -> None:
    before = listing(settings.models_dir)
    result = await models.swap_in(
        [Candidate("unified_brain", settings.models_dir / "unified_brain.onnx")]
    )
    assert result.ok
    assert not result.installed
    assert listing(settings.models_dir) == before


def fail_before_renames(self: Transaction) -> None:
    """Backups and records are staged, then the process fails before any file is replaced."""
    raise OSError("injected: disk vanished before install")


def fail_after_renames(self: Transaction, apply: Any = Transaction.apply) -> None:
    """Files are replaced, then the process fails before the in-memory swap."""
    apply(self)
    raise OSError("injected: failure between install and swap")


@pytest.mark.parametrize("failure", [fail_before_renames, fail_after_renames])
async def test_injected_failure_leaves_the_old_model_serving_and_loadable(
    failure: Any, settings: Settings, model_file: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = new_models(settings)
    await models.start()
    brain = models.brain
    active = settings.models_dir / "unified_brain.onnx"
    before_bytes, before_files = active.read_bytes(), listing(settings.models_dir)
    monkeypatch.setattr(installer_module.Transaction, "apply", failure)

    assert await brain.reload_models(model_file(seed=5, version="v2")) is False

    monkeypatch.undo()
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}
    assert active.read_bytes() == before_bytes
    assert listing(settings.models_dir) == before_files
    restarted = new_models(settings)
    await restarted.start()
    assert restarted.brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}


async def test_a_set_of_models_installs_all_or_nothing(models_dir: Path, model_file: Any) -> None:
    save(decision_model(seed=11, version="risk-1"), models_dir / "rl" / "risk.onnx")
    two_slots = {
        "slots": {"unified_brain": {"path": "unified_brain.onnx"}, "risk": {"path": "rl/risk.onnx"}}
    }
    models = new_models(make_settings(models_dir, brain=two_slots))
    await models.start()
    brain = models.brain
    before = listing(models_dir)

    bad_set = [
        Candidate("unified_brain", model_file("a.onnx", seed=1, version="new-a")),
        Candidate("risk", model_file("b.onnx", n_features=12)),
    ]
    result = await models.swap_in(bad_set, origin=CLI)
    assert not result.ok
    assert "risk" in result.reason
    assert listing(models_dir) == before
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1", "risk": "risk-1"}

    good_set = [bad_set[0], Candidate("risk", model_file("c.onnx", seed=3, version="new-risk"))]
    assert (await models.swap_in(good_set, origin=CLI)).ok
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "new-a", "risk": "new-risk"}


async def test_decisions_never_fail_or_mix_versions_during_reloads(
    brain: TradingBrain, model_file: Any
) -> None:
    versions = {"embedded-1", "v-a", "v-b"}
    candidates = [
        model_file("a.onnx", seed=1, version="v-a"),
        model_file("b.onnx", seed=2, version="v-b"),
    ]
    seen: list[dict[str, str]] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def decide_forever() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            try:
                seen.append(dict(brain.decide(rng.standard_normal(16)).versions))
            except BaseException as error:
                failures.append(error)
            await asyncio.sleep(0)

    deciders = [asyncio.create_task(decide_forever()) for _ in range(4)]
    results = [await brain.reload_models(candidates[i % 2]) for i in range(6)]
    stop.set()
    await asyncio.gather(*deciders)

    assert results == [True] * 6
    assert failures == []
    assert len(seen) > 100
    assert all(len(v) == 1 and v["unified_brain"] in versions for v in seen)
    assert {v["unified_brain"] for v in seen} >= {"v-a", "v-b"}


async def test_concurrent_reloads_are_serialized(brain: TradingBrain, model_file: Any) -> None:
    a = model_file("a.onnx", seed=1, version="v-a")
    b = model_file("b.onnx", seed=2, version="v-b")
    results = await asyncio.gather(*(brain.reload_models(p) for p in (a, b, a, b)))
    assert results == [True] * 4
    assert brain.decide([0.0] * 16).versions["unified_brain"] == "v-b"


async def test_rollback_restores_the_previous_model(settings: Settings, model_file: Any) -> None:
    models = new_models(settings, clock=FakeClock())
    await models.start()
    brain = models.brain
    original = (settings.models_dir / "unified_brain.onnx").read_bytes()
    assert await brain.reload_models(model_file(seed=5, version="v2"))

    result = await models.rollback()

    assert result.ok
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}
    assert (settings.models_dir / "unified_brain.onnx").read_bytes() == original
    # The rolled-back model was itself backed up: a rollback can be undone.
    assert len(models.backups()) == 2


async def test_rollback_to_a_named_backup(settings: Settings, model_file: Any) -> None:
    models = new_models(settings, clock=FakeClock())
    await models.start()
    brain = models.brain
    assert await brain.reload_models(model_file("a.onnx", seed=1, version="v-a"))
    assert await brain.reload_models(model_file("b.onnx", seed=2, version="v-b"))
    oldest = models.backups()[-1]  # the embedded model

    result = await models.rollback("unified_brain", oldest.name)

    assert result.ok
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}


async def test_rollback_without_backups_is_refused(
    brain: TradingBrain, models: ModelInstaller
) -> None:
    result = await models.rollback()
    assert not result.ok
    assert "no backup" in result.reason
    named = await models.rollback(backup="unified_brain_20000101_000000.onnx")
    assert not named.ok


async def test_backups_keep_the_newest_n(settings: Settings, model_file: Any) -> None:
    retained = make_settings(settings.models_dir, models={"backup_retention": 3})
    models = new_models(retained, clock=FakeClock())
    await models.start()
    brain = models.brain
    for i in range(6):
        assert await brain.reload_models(model_file(f"m{i}.onnx", seed=i, version=f"v{i}"))
    names = [p.name for p in models.backups()]
    assert names == [
        "unified_brain_20250108_143028.onnx",
        "unified_brain_20250108_143027.onnx",
        "unified_brain_20250108_143026.onnx",
    ]


async def test_a_backup_is_never_overwritten(settings: Settings, model_file: Any) -> None:
    frozen = datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)
    models = new_models(settings, clock=lambda: frozen)
    await models.start()
    brain = models.brain
    first = model_file("a.onnx", seed=1, version="v-a")
    assert await brain.reload_models(first)
    assert await brain.reload_models(model_file("b.onnx", seed=2, version="v-b"))
    backups = {p.name: p.read_bytes() for p in models.backups()}
    assert set(backups) == {
        "unified_brain_20250108_143022.onnx",
        "unified_brain_20250108_143022_2.onnx",
    }
    assert backups["unified_brain_20250108_143022_2.onnx"] == first.read_bytes()


async def test_another_writer_is_kept_out_with_a_clear_message(
    brain: TradingBrain, models: ModelInstaller, settings: Settings, model_file: Any
) -> None:
    held = DirectoryLock(settings.models_dir / ".sync" / "write.lock")
    try:
        result = await models.swap_in([Candidate("unified_brain", model_file(seed=5))], origin=CLI)
    finally:
        held.release()
    assert not result.ok
    assert f"process {os.getpid()} is writing to" in result.reason
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}


async def test_a_model_installed_by_another_process_is_picked_up(
    brain: TradingBrain, models: ModelInstaller, settings: Settings, model_file: Any
) -> None:
    other = new_models(settings)
    await other.start()
    assert await other.brain.reload_models(model_file(seed=5, version="v2"))

    assert await models.refresh_from_disk() == ["unified_brain"]
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "v2"}
    assert await models.refresh_from_disk() == []


async def test_a_bad_file_dropped_in_place_by_hand_is_not_served(
    brain: TradingBrain, models: ModelInstaller, settings: Settings, logs: list[str]
) -> None:
    replacement = settings.models_dir / "tmp.onnx"
    save(decision_model(n_features=12), replacement)
    replacement.replace(settings.models_dir / "unified_brain.onnx")

    assert await models.refresh_from_disk() == []
    assert brain.decide([0.0] * 16).versions == {"unified_brain": "embedded-1"}
    assert any("changed on disk but refused" in line for line in logs)


async def test_a_source_file_rewritten_later_does_not_touch_the_active_model(
    brain: TradingBrain, settings: Settings, model_file: Any
) -> None:
    candidate = model_file(seed=5, version="v2")
    assert await brain.reload_models(candidate)
    installed = (settings.models_dir / "unified_brain.onnx").read_bytes()
    with candidate.open("r+b") as stream:  # rewrite in place, as `cp` over it would
        stream.write(b"\0" * 64)
    assert (settings.models_dir / "unified_brain.onnx").read_bytes() == installed
