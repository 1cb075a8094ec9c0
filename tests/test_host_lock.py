"""One host per models directory: a second `python -m app run` is refused, naming the first;
one-shot commands still work beside a running host; a dead host's lock is gone with it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from app.errors import HostAlreadyRunning
from app.install.lock import hold_host
from tests.test_cli import (
    EMBEDDED_VERSION,
    Bot,
    RunningHost,
    assert_said_once,
    is_decision,
    write_settings,
)


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=write_settings(tmp_path), models=models_dir, cwd=cwd)


@pytest.fixture
def start_host(bot: Bot) -> Iterator[Callable[..., RunningHost]]:
    started: list[RunningHost] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> RunningHost:
        host = RunningHost(bot.command(*args), cwd=bot.cwd, env=bot.env if env is None else env)
        started.append(host)
        return host

    yield start
    for host in started:
        host.close()


@pytest.fixture
def running(start_host: Callable[..., RunningHost]) -> RunningHost:
    """A host that is deciding."""
    host = start_host("run")
    host.wait_for(is_decision(EMBEDDED_VERSION))
    return host


def test_a_second_host_is_refused_naming_the_first(bot: Bot, running: RunningHost) -> None:
    second = bot.run("run")

    assert second.returncode == 1
    line = assert_said_once(second, "error: ")
    assert f"pid {running.process.pid}" in line
    assert str(bot.models) in line
    assert running.process.poll() is None  # the first keeps serving
    assert running.stop() == 0


@pytest.mark.parametrize(
    "args",
    [("status",), ("--smoke",), ("install", "MODEL"), ("rollback",), ("sync",), ("quarantine",)],
    ids=lambda args: args[0],
)
def test_one_shot_commands_work_beside_a_running_host(
    bot: Bot, running: RunningHost, model_file: Any, args: tuple[str, ...]
) -> None:
    if args[0] == "rollback":  # something to roll back to
        assert bot.run("install", model_file("v2.onnx", seed=5, version="v2")).returncode == 0
    argv = [str(model_file("v3.onnx", seed=6, version="v3")) if a == "MODEL" else a for a in args]

    done = bot.run(*argv)

    assert done.returncode == 0, done.stderr
    assert running.process.poll() is None


def test_a_host_that_died_leaves_no_lock_behind(
    bot: Bot, running: RunningHost, start_host: Callable[..., RunningHost]
) -> None:
    running.process.send_signal(signal.SIGKILL)
    running.process.wait(timeout=10)

    after = start_host("run")
    after.wait_for(is_decision(EMBEDDED_VERSION))

    assert after.stop() == 0


def test_a_stopped_host_releases_the_lock(bot: Bot, running: RunningHost) -> None:
    assert running.stop() == 0

    lock = hold_host(bot.models)  # would raise if the lock were still held
    lock.release()


def test_the_lock_names_its_holder_and_is_free_again_after_release(models_dir: Path) -> None:
    with hold_host(models_dir) as held:
        assert held.path.read_text() == str(os.getpid())
        with pytest.raises(HostAlreadyRunning, match=rf"another host \(pid {os.getpid()}\)"):
            hold_host(models_dir)
    assert (models_dir / ".sync" / "host.lock").read_text() == ""
    hold_host(models_dir).release()
