"""MLMemoryManager: room for the serving model and its candidate side by side, or a refusal
that leaves the old model serving and the disk as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from app.brain.brain import TradingBrain
from app.brain.models import Candidate
from app.containers import Application
from app.errors import ModelError
from app.install.installer import ModelInstaller
from app.services.memory import (
    BUILD_FACTOR,
    RESIDENT_FACTOR,
    MLMemoryManager,
    available_memory_bytes,
)
from app.settings import MemorySettings, Settings
from tests.conftest import make_settings

MIB = 1 << 20
SLOT = "unified_brain"
EMBEDDED_VERSION = "embedded-1"
BIG_MODEL_MB = 5  # a 5 MB candidate needs about 10.5 MB while it is built
SMALL_LIMIT_MB = 8


def no_system_limit() -> int | None:
    return None


def guard(limit_mb: float, available: Any = no_system_limit) -> MLMemoryManager:
    return MLMemoryManager(MemorySettings(limit_mb=limit_mb), available=available)


def snapshot_of_disk(models_dir: Path) -> dict[str, str]:
    """Every file under the models directory (but the lock file, meant to stay) and its hash."""
    return {
        str(path.relative_to(models_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(models_dir.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


# -- the rule ---------------------------------------------------------------------------------


def test_the_factors_are_what_the_module_measured() -> None:
    assert (RESIDENT_FACTOR, BUILD_FACTOR) == (1.1, 2.1)


def test_room_for_the_candidate_beside_the_loaded_models_passes() -> None:
    # 1 MB loaded (1.1 resident) + 4 MB candidate (8.4 to build) = 9.5 MB of a 10 MB limit.
    guard(10).check_room(SLOT, 4 * MIB, {SLOT: 1 * MIB})


def test_a_candidate_that_does_not_fit_beside_the_loaded_model_is_refused() -> None:
    # 1.1 MB loaded + 10.5 MB to build 5 MB = 11.6 MB, over 10 MB.
    with pytest.raises(ModelError, match=r"memory\.limit_mb") as refusal:
        guard(10).check_room(SLOT, 5 * MIB, {SLOT: 1 * MIB})

    message = str(refusal.value)
    assert repr(SLOT) in message
    assert "the current model keeps serving" in message
    assert "10 MB" in message  # the limit, in the unit the setting uses


def test_every_loaded_slot_counts_against_the_limit() -> None:
    limit = guard(10)
    limit.check_room(SLOT, 3 * MIB, {SLOT: 1 * MIB})  # 1.1 + 6.3 = 7.4

    with pytest.raises(ModelError, match=r"memory\.limit_mb"):
        limit.check_room(SLOT, 3 * MIB, {SLOT: 1 * MIB, "rl_agent": 3 * MIB})  # + 3.3 = 10.7


def test_the_candidate_alone_can_be_too_big_for_an_empty_brain() -> None:
    with pytest.raises(ModelError, match=r"memory\.limit_mb"):
        guard(10).check_room(SLOT, 5 * MIB, {})


def test_low_available_memory_refuses_even_under_the_limit() -> None:
    low = guard(4096, available=lambda: 6 * MIB)

    with pytest.raises(ModelError, match="available") as refusal:
        low.check_room(SLOT, 4 * MIB, {})  # 8.4 MB needed, 6 MB available

    assert "memory.limit_mb" not in str(refusal.value)  # the limit is not what stopped it
    guard(4096, available=lambda: 9 * MIB).check_room(SLOT, 4 * MIB, {})


def test_usage_accounts_each_slot_at_its_resident_size() -> None:
    assert guard(10).usage({SLOT: 10 * MIB, "rl_agent": 0}) == {
        SLOT: int(10 * MIB * RESIDENT_FACTOR),
        "rl_agent": 0,
    }


# -- reading MemAvailable -----------------------------------------------------------------------


def test_mem_available_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24683520 kB\nMemFree:        22293504 kB\n"
        "MemAvailable:   23472128 kB\nBuffers:           10240 kB\n"
    )

    assert available_memory_bytes(meminfo) == 23472128 * 1024


@pytest.mark.parametrize(
    "content",
    [None, "MemTotal: 1 kB\n", "MemAvailable: lots kB\n"],
    ids=["missing", "no-line", "garbage"],
)
def test_mem_available_is_none_when_it_cannot_be_read(tmp_path: Path, content: str | None) -> None:
    meminfo = tmp_path / "meminfo"
    if content is not None:
        meminfo.write_text(content)

    assert available_memory_bytes(meminfo) is None


def test_mem_available_on_this_machine_is_a_positive_size() -> None:
    available = available_memory_bytes()
    assert available is None or available > 0


# -- the brain with a guard ---------------------------------------------------------------------


async def guarded(settings: Settings, memory: MLMemoryManager) -> ModelInstaller:
    models = ModelInstaller(settings, TradingBrain(settings.brain, memory_guard=memory))
    await models.start()
    return models


async def test_a_model_too_big_for_the_limit_is_refused_and_the_old_one_serves(
    settings: Settings, models_dir: Path, model_file: Any
) -> None:
    models = await guarded(settings, guard(SMALL_LIMIT_MB))
    brain = models.brain
    big = model_file("big.onnx", padding_mb=BIG_MODEL_MB, version="big")
    before = snapshot_of_disk(models_dir)

    result = await models.swap_in([Candidate(SLOT, big)])

    assert not result.ok
    assert "memory.limit_mb" in result.reason
    assert brain.decide([0.0] * 16).versions == {SLOT: EMBEDDED_VERSION}
    assert snapshot_of_disk(models_dir) == before
    assert models.backups() == []


async def test_a_model_that_fits_installs_through_the_same_guard(
    settings: Settings, model_file: Any
) -> None:
    models = await guarded(settings, guard(SMALL_LIMIT_MB))
    brain = models.brain

    assert await brain.reload_models(model_file("small.onnx", version="small", seed=5))
    assert brain.decide([0.0] * 16).versions == {SLOT: "small"}


async def test_low_available_memory_refuses_an_install(
    settings: Settings, models_dir: Path, model_file: Any
) -> None:
    models = await guarded(settings, guard(4096, available=lambda: 2 * MIB))
    brain = models.brain
    big = model_file("big.onnx", padding_mb=BIG_MODEL_MB, version="big")
    before = snapshot_of_disk(models_dir)

    result = await models.swap_in([Candidate(SLOT, big)])

    assert not result.ok
    assert "available" in result.reason
    assert brain.decide([0.0] * 16).versions == {SLOT: EMBEDDED_VERSION}
    assert snapshot_of_disk(models_dir) == before


async def test_the_container_guards_the_brain_with_memory_limit_mb(
    models_dir: Path, model_file: Any
) -> None:
    settings = make_settings(models_dir, memory={"limit_mb": SMALL_LIMIT_MB})
    container = Application(config=settings)
    models = container.models()
    await models.start()
    brain = models.brain
    before = snapshot_of_disk(models_dir)

    result = await models.swap_in(
        [Candidate(SLOT, model_file("big.onnx", padding_mb=BIG_MODEL_MB, version="big"))]
    )

    assert not result.ok
    assert "memory.limit_mb" in result.reason
    assert snapshot_of_disk(models_dir) == before
    assert brain.decide([0.0] * 16).versions == {SLOT: EMBEDDED_VERSION}


async def test_a_brain_whose_model_does_not_fit_does_not_start(
    tmp_path: Path, model_file: Any
) -> None:
    models_dir = tmp_path / "big-models"
    models_dir.mkdir()
    model_file("big.onnx", padding_mb=BIG_MODEL_MB).replace(models_dir / f"{SLOT}.onnx")
    settings = make_settings(models_dir)
    models = ModelInstaller(
        settings, TradingBrain(settings.brain, memory_guard=guard(SMALL_LIMIT_MB))
    )
    brain = models.brain

    with pytest.raises(ModelError, match=r"memory\.limit_mb"):
        await models.start()
    assert not brain.loaded


async def test_at_start_up_each_slot_counts_the_slots_loaded_before_it(
    tmp_path: Path, model_file: Any
) -> None:
    # Two 3 MB models: each alone needs about 6.3 MB to build and fits under 8 MB, but the
    # second one is built beside the first (about 3.3 MB resident) and does not.
    models_dir = tmp_path / "two-slots"
    models_dir.mkdir()
    model_file("a.onnx", padding_mb=3).replace(models_dir / f"{SLOT}.onnx")
    model_file("b.onnx", padding_mb=3, seed=2).replace(models_dir / "risk.onnx")
    slots = {SLOT: {"path": f"{SLOT}.onnx"}, "risk": {"path": "risk.onnx"}}
    settings = make_settings(models_dir, brain={"slots": slots})
    models = ModelInstaller(
        settings, TradingBrain(settings.brain, memory_guard=guard(SMALL_LIMIT_MB))
    )

    with pytest.raises(ModelError, match=r"slot 'risk'.*memory\.limit_mb"):
        await models.start()
