"""Nothing a model does can hurt the host: budgets at warm-up, a decision path that defends
itself, slow models off the event loop, validations that stop, and the watch's race.

Each hostile model is real (``tests/onnx_models.py``) and passes the old checks: a graph that
expands to gigabytes, a warm-up that runs for minutes, a slow decision, NaN and a wider output
only on real rows (never on the probe).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.brain.brain import TradingBrain
from app.brain.health import DecisionHealth
from app.brain.models import Candidate
from app.host import BotHost
from app.install.installer import ModelInstaller
from app.settings import Settings
from app.trading.features import WARMUP_BARS
from app.trading.loop import TradingLoop
from app.trading.market import BarFeed
from app.trading.synthetic import synthetic_bars
from tests.conftest import make_settings, start_models
from tests.onnx_models import decision_model, save
from tests.small_disk import SmallDisk, small_disk
from tests.test_cli import app_environment, write_settings

__all__ = ["small_disk"]  # the fixture, used by name

SLOT = "unified_brain"
EMBEDDED = "embedded-1"
REAL_ROW = np.full(16, 20.0, dtype=np.float32)  # far outside the probe's standard normal
QUIET = np.zeros(16, dtype=np.float32)


def serving(models: ModelInstaller) -> str:
    return models.brain.snapshot.versions[SLOT]


# -- budgets at warm-up ---------------------------------------------------------------------------


def test_a_graph_that_expands_to_gigabytes_is_refused_and_the_process_stays_small(
    tmp_path: Path, models_dir: Path
) -> None:
    settings_file = write_settings(tmp_path, memory={"limit_mb": 256})
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "unified_brain.onnx").write_bytes(
        (models_dir / "unified_brain.onnx").read_bytes()
    )
    # 80 million rows of 16 floats: 5.1 GB asked for at run time, by a file under 1 KB
    hostile = save(decision_model(expand_rows=80_000_000), tmp_path / "expand.onnx")
    assert hostile.stat().st_size < 1024

    done = subprocess.run(
        [sys.executable, "-m", "app", "install", str(hostile)],
        cwd=tmp_path,
        env=app_environment(APP_SETTINGS=str(settings_file)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    assert done.returncode == 1
    assert "asked for 4,883 MB" in done.stderr
    assert "memory.limit_mb" in done.stderr
    assert "Traceback" not in done.stderr
    assert peak_mb < 1024, f"the refusing process peaked at {peak_mb:.0f} MB"


async def test_a_warm_up_that_runs_too_long_is_stopped_and_refused(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(models_dir, brain={"validation_timeout_seconds": 0.5})
    models = await start_models(settings)
    slow = save(decision_model(work_loops=2_000_000, version="slow"), tmp_path / "slow.onnx")

    started = time.monotonic()
    result = await models.swap_in([Candidate(SLOT, slow)])
    took = time.monotonic() - started

    assert not result.ok
    assert "over brain.validation_timeout_seconds (0.5 s)" in result.reason
    assert took < 5, f"the validation ran {took:.1f} s"  # the model alone needs minutes
    assert serving(models) == EMBEDDED


async def test_a_model_slow_per_decision_is_refused_with_the_figure(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(models_dir, brain={"max_decision_ms": 5})
    models = await start_models(settings)
    slow = save(decision_model(work_loops=1_000, version="slow"), tmp_path / "slow.onnx")

    result = await models.swap_in([Candidate(SLOT, slow)])

    assert not result.ok
    assert "ms (p99 of 25 runs): over brain.max_decision_ms (5 ms)" in result.reason
    assert serving(models) == EMBEDDED


async def test_stopping_the_host_stops_a_validation_in_flight(
    models: ModelInstaller, tmp_path: Path
) -> None:
    slow = save(decision_model(work_loops=2_000_000, version="slow"), tmp_path / "slow.onnx")
    swap = asyncio.create_task(models.swap_in([Candidate(SLOT, slow)]))
    await asyncio.sleep(0.5)
    host = BotHost(models, watch_seconds=1)

    started = time.monotonic()
    host.stop()
    result = await asyncio.wait_for(swap, timeout=10)

    assert time.monotonic() - started < 5
    assert not result.ok
    assert "the host is stopping" in result.reason
    assert serving(models) == EMBEDDED


# -- the decision path defends itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostile", "said"),
    [({"nan_above": 10.0}, "is not a distribution"), ({"wide_above": 10.0}, "output shape [1, 5]")],
)
async def test_a_bad_output_on_real_rows_is_a_hold_and_marks_the_model_unhealthy(
    hostile: dict[str, Any], said: str, models: ModelInstaller, tmp_path: Path, logs: list[str]
) -> None:
    candidate = save(decision_model(version="liar", **hostile), tmp_path / "liar.onnx")
    assert await models.brain.reload_models(candidate)  # the probe sees nothing wrong
    invalid: list[tuple[str, str, str]] = []
    models.brain.observe_invalid_outputs(lambda *seen: invalid.append(seen))

    assert models.brain.decide(QUIET).confidence > 0  # fine on quiet rows
    decisions = [models.brain.decide(REAL_ROW) for _ in range(3)]

    assert {(d.action, d.confidence) for d in decisions} == {("hold", 0.0)}
    assert len(invalid) == 3
    assert said in models.brain.unhealthy[SLOT]
    assert sum("gave an invalid output" in line for line in logs) == 1  # told once per model


async def test_a_new_model_clears_the_unhealthy_mark(
    models: ModelInstaller, tmp_path: Path, model_file: Any
) -> None:
    liar = save(decision_model(version="liar", nan_above=10.0), tmp_path / "liar.onnx")
    assert await models.brain.reload_models(liar)
    models.brain.decide(REAL_ROW)
    assert models.brain.unhealthy

    assert await models.brain.reload_models(model_file(seed=4, version="honest"))
    assert models.brain.unhealthy == {}


async def test_a_model_over_the_inline_budget_decides_in_a_worker_thread(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(models_dir, brain={"inline_decision_ms": 0.5})
    models = await start_models(settings)
    threads: list[str] = []
    models.brain.observe_decisions(lambda *_: threads.append(threading.current_thread().name))

    await models.brain.decide_async(QUIET)  # the embedded model: microseconds, inline
    slow = save(decision_model(work_loops=100, version="slower"), tmp_path / "slower.onnx")
    assert await models.brain.reload_models(slow)
    await models.brain.decide_async(QUIET)

    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("decide")


async def test_the_event_loop_keeps_ticking_while_a_slow_model_decides(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(models_dir, brain={"max_decision_ms": 1000})
    models = await start_models(settings)
    slow = save(decision_model(work_loops=2_000, version="slow"), tmp_path / "slow.onnx")
    assert await models.brain.reload_models(slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    counting = asyncio.create_task(ticker())
    await models.brain.decide_async(QUIET)  # ~0.2 s of model time
    counting.cancel()

    assert ticks > 20  # inline, the loop would not have run once


# -- the decision job never dies silently ---------------------------------------------------------


def test_decision_health_says_when_decisions_fail_or_stop() -> None:
    now = [0.0]
    health = DecisionHealth(1.0, clock=lambda: now[0])
    assert health.problem() is None  # no decision job: nothing to say
    health.started()
    health.decided()
    now[0] = 5.0
    assert health.problem() is None
    for _ in range(3):
        health.failed(RuntimeError("boom"))
    assert health.problem() == "the last 3 decisions failed (RuntimeError: boom)"
    health.decided()
    now[0] = 30.0
    assert health.problem() == "no decision for 25 s"


async def test_the_trading_loop_survives_failing_decisions(
    settings: Settings, logs: list[str]
) -> None:
    class Flaky(TradingBrain):
        calls = 0

        def decide(self, features: Any) -> Any:
            Flaky.calls += 1
            if Flaky.calls <= 3:
                raise RuntimeError("flaky")
            return super().decide(features)

    models = ModelInstaller(settings, Flaky(settings.brain))
    await models.start()
    health = DecisionHealth(0.0)
    feed = BarFeed("bars", synthetic_bars(WARMUP_BARS + 20, seed=3).bars())
    loop = TradingLoop(models.brain, feed, cost_bps=1, health=health)
    host = BotHost(models, watch_seconds=60, trading=loop)
    running = asyncio.create_task(host.run())
    while loop.bars < WARMUP_BARS + 20:
        await asyncio.sleep(0.01)
    host.stop()
    await running

    assert health.errors == 3
    attempts = (WARMUP_BARS + 20) - (WARMUP_BARS - 1)  # every bar once the features are warm
    assert health.decisions == loop.decisions == attempts - 3  # the loop went on
    assert sum("A decision failed" in line for line in logs) == 1  # one line per streak


# -- the watch and a file replaced while it loads -------------------------------------------------


async def test_a_file_replaced_during_a_load_is_loaded_next_and_unready_meanwhile(
    settings: Settings, tmp_path: Path
) -> None:
    active = settings.models_dir / "unified_brain.onnx"
    middle = save(decision_model(seed=1, version="middle"), tmp_path / "middle.onnx")
    last = save(decision_model(seed=2, version="last"), tmp_path / "last.onnx")

    class ReplacedWhileLoading(TradingBrain):
        armed = False

        def load_model(self, slot: str, path: Path, **kwargs: Any) -> Any:
            loaded = super().load_model(slot, path, **kwargs)
            if self.armed and last.exists():
                last.replace(active)  # another writer, while this load was under way
            return loaded

    brain = ReplacedWhileLoading(settings.brain)
    models = ModelInstaller(settings, brain)
    await models.start()
    brain.armed = True
    middle.replace(active)

    assert await models.refresh_from_disk() == [SLOT]
    assert serving(models) == "middle"
    assert "not loaded yet" in models.disk_differences()[SLOT]  # /readyz says 503

    assert await models.refresh_from_disk() == [SLOT]
    assert serving(models) == "last"
    assert models.disk_differences() == {}


# -- a full disk during an install ----------------------------------------------------------------


async def test_an_install_that_fills_the_disk_is_one_line_and_leaves_nothing(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    settings = make_settings(small_disk.root / "models")
    models = await start_models(settings)
    # 3 MB of weights: more than the 2 MiB disk holds, so staging the copy hits ENOSPC
    big = save(decision_model(padding_mb=3, version="big"), tmp_path / "big.onnx")

    result = await models.swap_in([Candidate(SLOT, big)])

    assert not result.ok
    assert "No space left on device" in result.reason
    assert "\n" not in result.reason
    assert result.retryable  # the disk, not the model: another try may well succeed
    assert small_disk.tree() == []
    assert serving(models) == EMBEDDED
