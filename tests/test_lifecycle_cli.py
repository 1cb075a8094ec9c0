"""The lifecycle as a user drives it: `python -m app` running on a CSV of autocorrelated bars,
models installed from another process, and ``promote``, ``reject``, ``status`` and
``quarantine`` from the command line, talking to the running host. One host is killed with
SIGKILL in mid-canary and the next one resumes it.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle_stack import SLOT, momentum_csv, momentum_file
from tests.test_cli import Bot, RunningHost, sha256, write_settings

WAIT_SECONDS = 60


@pytest.fixture
def bot(tmp_path: Path) -> Bot:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copyfile(
        momentum_file(tmp_path / "built", 1.0, "momentum-1"), models_dir / "unified_brain.onnx"
    )
    settings = write_settings(
        tmp_path,
        market={
            "source": "csv",
            "csv_path": str(momentum_csv(tmp_path / "bars.csv", bars=6000)),
            "bars_per_second": 40,
        },
        lifecycle={"canary_minutes": 600, "min_trades": 5},
        brain={"log_every": 50},
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=settings, models=models_dir, cwd=cwd)


@pytest.fixture
def host(bot: Bot) -> Iterator[Callable[[], RunningHost]]:
    started: list[RunningHost] = []

    def start() -> RunningHost:
        running = RunningHost(bot.command(), cwd=bot.cwd, env=bot.env)
        started.append(running)
        running.wait_for(lambda line: "[OPS] Serving on" in line)
        return running

    yield start
    for running in started:
        running.close()


def lifecycle(bot: Bot) -> dict[str, Any]:
    view: dict[str, Any] = bot.status()["lifecycle"]
    return view


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"never {what}")
        time.sleep(0.2)


def install(bot: Bot, tmp_path: Path, version: str, sign: float = 1.0) -> None:
    done = bot.run("install", momentum_file(tmp_path / "offered", sign, version))
    assert done.returncode == 0, done.stderr


def test_promote_and_reject_from_the_command_line_reach_the_running_host(
    bot: Bot, host: Callable[[], RunningHost], tmp_path: Path
) -> None:
    host()
    install(bot, tmp_path, "momentum-2")
    wait_until(lambda: lifecycle(bot)["stage"] == "canary", "saw the canary start")

    promoted = bot.run("promote")

    assert promoted.returncode == 0, promoted.stderr
    assert "promoted momentum-2" in promoted.stdout
    view = lifecycle(bot)
    assert (view["stage"], view["incumbent"], view["verdict"], view["rule"]) == (
        "champion",
        "momentum-2",
        "pass",
        "by_hand",
    )
    assert bot.run("promote").returncode == 1  # nothing left to promote: one line, exit 1

    install(bot, tmp_path, "momentum-3")
    wait_until(lambda: lifecycle(bot)["stage"] == "canary", "saw the second canary")
    rejected = bot.run("reject")

    assert rejected.returncode == 0, rejected.stderr
    wait_until(lambda: bot.status()["version"] == "momentum-2", "restored momentum-2")
    listed = json.loads(bot.run("quarantine", "--json").stdout)["quarantine"]
    assert [(entry["version"], entry["why"]) for entry in listed] == [
        ("momentum-3", "rejected by hand")
    ]
    view = lifecycle(bot)
    assert (view["stage"], view["incumbent"], view["candidate"], view["verdict"]) == (
        "champion",
        "momentum-2",
        "momentum-3",
        "fail",
    )
    status_text = bot.run("status").stdout
    assert "lifecycle: canary, champion momentum-2; last verdict on momentum-3: fail" in (
        status_text
    )


def test_promote_without_a_running_host_says_so_in_one_line(bot: Bot) -> None:
    done = bot.run("promote")

    assert done.returncode == 1
    assert done.said == [
        (
            f"error: no running host serves {bot.models} (no {bot.models}/.sync/ops.json): "
            "start one with `python -m app` and ops.enabled: true"
        )
    ]


def test_a_host_killed_in_mid_canary_resumes_it(
    bot: Bot, host: Callable[[], RunningHost], tmp_path: Path
) -> None:
    first = host()
    install(bot, tmp_path, "momentum-2")
    wait_until(
        lambda: lifecycle(bot)["stage"] == "canary" and lifecycle(bot)["figures"]["bars"] >= 20,
        "judged 20 bars of the canary",
    )
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    before = lifecycle(bot)

    second = host()
    second.wait_for(lambda line: "Resuming the canary of momentum-2 against momentum-1" in line)
    wait_until(
        lambda: lifecycle(bot)["figures"]["bars"] > before["figures"]["bars"],
        "judged more bars after the restart",
    )
    after = lifecycle(bot)

    assert after["stage"] == "canary"
    assert (after["candidate"], after["incumbent"]) == ("momentum-2", "momentum-1")
    assert (after["started_at"], after["ends_at"]) == (before["started_at"], before["ends_at"])
    assert bot.status()["version"] == "momentum-2"
    assert second.stop() == 0
    assert SLOT in bot.status()["path"]


def test_install_names_the_file_offered_and_says_the_canary_comes_first(
    bot: Bot, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "bars.csv"
    not_a_model.write_text("timestamp,open\n")

    refused = bot.run("install", not_a_model)
    installed = bot.run("install", momentum_file(tmp_path / "offered", 1.0, "momentum-2"))

    assert refused.returncode == 1
    [line] = refused.said
    assert line.startswith("refused: bars.csv cannot be loaded by ONNX Runtime: ")
    assert ".sync/staging" not in line
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.splitlines()[1] == (
        "  a running host trades it only once its canary passes "
        "(`python -m app status` shows the stage)"
    )


def test_status_says_when_the_active_file_is_quarantined(bot: Bot, tmp_path: Path) -> None:
    model = momentum_file(tmp_path / "offered", -1.0, "inverted-2")
    assert bot.run("install", model).returncode == 0
    quarantine = bot.models / ".sync" / "quarantine.json"
    entry = {
        "sha256": sha256(model),
        "slot": SLOT,
        "version": "inverted-2",
        "at": "2026-12-01T00:00:00Z",
        "why": "net return -2.03% reached the loss limit -2.00%",
    }
    quarantine.write_text(json.dumps({"quarantine": [entry]}))

    problem = bot.status()["problem"]

    assert problem.startswith("quarantined since 2026-12-01T00:00:00Z (net return -2.03%")
