"""Every swap and every refusal is counted whatever its source; a gauge with no value yet is
absent rather than a misleading 0.

Real brains on real model files, the real inbox, metrics read back through Prometheus' parser.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.brain.brain import TradingBrain
from app.containers import Core, resolve, trading_brain
from app.install.installer import ModelInstaller
from app.services.inbox import LocalInbox
from app.services.monitoring import ProductionMonitoringService
from app.services.observers import observe_brain
from tests.artifacts import model_artifact
from tests.conftest import make_settings
from tests.metrics import labels_of, parse_metrics, value
from tests.onnx_models import decision_model, save

SLOT = "unified_brain"


def scrape(monitoring: ProductionMonitoringService) -> Any:
    return parse_metrics(monitoring.render()[0].decode())


def swaps(monitoring: ProductionMonitoringService, **labels: str) -> float | None:
    return value(scrape(monitoring), "trading_brain_swaps_total", **labels)


@pytest.fixture
def monitoring() -> ProductionMonitoringService:
    return ProductionMonitoringService()


@pytest.fixture
def observed(models: ModelInstaller, monitoring: ProductionMonitoringService) -> ModelInstaller:
    return observe_brain(models, monitoring, None)


# -- gauges ---------------------------------------------------------------------------------------


def test_gauges_with_no_value_yet_are_absent(monitoring: ProductionMonitoringService) -> None:
    before = scrape(monitoring)

    assert labels_of(before, "model_sync_github_rate_limit_remaining") == []
    assert labels_of(before, "model_sync_last_success_timestamp_seconds") == []

    monitoring.set_rate_limit_remaining(0)

    assert value(scrape(monitoring), "model_sync_github_rate_limit_remaining") == 0
    assert labels_of(scrape(monitoring), "model_sync_last_success_timestamp_seconds") == []


# -- swaps, whatever their source ----------------------------------------------------------------


async def test_every_swap_and_refusal_is_counted_by_source(
    observed: ModelInstaller,
    brain: TradingBrain,
    monitoring: ProductionMonitoringService,
    model_file: Any,
) -> None:
    assert await brain.reload_models(model_file("v2.onnx", seed=2, version="v2"))
    assert not await brain.reload_models(model_file("wide.onnx", n_features=5))
    assert (await observed.rollback()).ok

    assert swaps(monitoring, outcome="installed", source="cli", reason="ok") == 1
    assert swaps(monitoring, outcome="refused", source="cli", reason="incompatible") == 1
    assert swaps(monitoring, outcome="installed", source="rollback", reason="ok") == 1


async def test_a_model_picked_up_from_disk_is_counted(
    observed: ModelInstaller, monitoring: ProductionMonitoringService, model_file: Any
) -> None:
    active = observed.brain.snapshot.models[SLOT].path
    replacement = model_file("v3.onnx", seed=3, version="v3")
    staged = active.with_name(".incoming.onnx")
    shutil.copyfile(replacement, staged)
    staged.replace(active)  # another process's atomic install

    assert await observed.refresh_from_disk() == [SLOT]

    assert swaps(monitoring, outcome="installed", source="disk", reason="ok") == 1
    metrics = scrape(monitoring)
    # Not timed by the brain: the reload histogram keeps only reloads it measured.
    assert value(metrics, "trading_brain_reload_seconds_count", outcome="installed") == 0


async def test_a_model_refused_from_disk_is_counted(
    observed: ModelInstaller, monitoring: ProductionMonitoringService, model_file: Any
) -> None:
    active = observed.brain.snapshot.models[SLOT].path
    staged = active.with_name(".incoming.onnx")
    shutil.copyfile(model_file("wide.onnx", n_features=5), staged)
    staged.replace(active)

    assert await observed.refresh_from_disk() == []

    assert swaps(monitoring, outcome="refused", source="disk", reason="incompatible") == 1


# -- the inbox -----------------------------------------------------------------------------------


@pytest.fixture
async def inbox(
    models_dir: Path, monitoring: ProductionMonitoringService
) -> AsyncIterator[LocalInbox]:
    settings = make_settings(models_dir, github={"token": ""})
    async with aiohttp.ClientSession() as session:
        core = Core(config=settings, http=session, brain=trading_brain(settings))
        core.monitoring.override(monitoring)
        await (await resolve(core.models)).start()
        yield await resolve(core.inbox)


def drop(inbox: LocalInbox, name: str, content: bytes) -> None:
    inbox.directory.mkdir(parents=True, exist_ok=True)
    path = inbox.directory / name
    path.write_bytes(content)
    os.utime(path, (0, 0))  # long settled


async def test_inbox_installs_and_rejections_are_counted(
    inbox: LocalInbox, monitoring: ProductionMonitoringService
) -> None:
    drop(inbox, "a-good.zip", model_artifact("v2"))
    drop(inbox, "b-lying.zip", model_artifact("lying", declared_sha256="1" * 64))

    results = await inbox.process_pending()

    assert [r.outcome for r in results] == ["installed", "rejected"]
    metrics = scrape(monitoring)
    assert value(metrics, "model_sync_artifacts_total", outcome="installed", reason="ok") == 1
    assert (
        value(metrics, "model_sync_artifacts_total", outcome="rejected", reason="checksum_mismatch")
        == 1
    )


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda path: path.write_bytes(b"not a model" * 10), "load_failed"),
        (lambda path: save(decision_model(nan_output=True), path), "invalid_output"),
        (lambda path: save(decision_model(n_features=8), path), "incompatible"),
    ],
    ids=["not onnx", "nan output", "wrong width"],
)
async def test_a_refusal_is_counted_under_the_check_it_failed(
    observed: ModelInstaller,
    brain: TradingBrain,
    monitoring: ProductionMonitoringService,
    tmp_path: Path,
    build: Any,
    reason: str,
) -> None:
    path = tmp_path / "bad.onnx"
    build(path)

    assert not await brain.reload_models(path)

    assert swaps(monitoring, outcome="refused", source="cli", reason=reason) == 1
