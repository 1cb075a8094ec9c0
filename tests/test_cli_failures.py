"""Every way the command line can fail says so in one line, with no traceback.

Each case is the real thing: `python -m app` in a subprocess, a models directory that really
is read-only, a port that really is taken, a real SIGINT at several moments of start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import (
    RUN_TIMEOUT,
    SLOT,
    Bot,
    Finished,
    app_environment,
    assert_said_once,
    write_settings,
)

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=write_settings(tmp_path), models=models_dir, cwd=cwd)


def no_traceback(finished: Finished) -> None:
    assert "Traceback" not in finished.stderr
    assert "Traceback" not in finished.stdout


# -- a read-only models directory ---------------------------------------------------------------


def _read_only_prefix(models: Path) -> list[str]:
    """A command prefix under which `models` is read-only, even for root (who ignores modes).

    As root: a private mount namespace with `models` bind-mounted read-only (the kernel then
    answers EROFS whoever asks). As anyone else: the folder's write bits are removed.
    """
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare(1): cannot make a folder read-only")
    probe = subprocess.run(
        [unshare, "--mount", "true"], capture_output=True, check=False, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip("running as root where mount namespaces are not allowed")
    script = f'mount --bind -o ro "{models}" "{models}" && exec "$@"'
    return [unshare, "--mount", "sh", "-c", script, "sh"]


@pytest.fixture
def read_only(bot: Bot) -> Iterator[list[str]]:
    prefix = _read_only_prefix(bot.models)
    modes = {path: path.stat().st_mode for path in [bot.models, *bot.models.rglob("*")]}
    if not prefix:
        for path in modes:
            path.chmod(path.stat().st_mode & ~0o222)
    yield prefix
    for path, mode in modes.items():
        path.chmod(mode)


def run_prefixed(bot: Bot, prefix: list[str], *args: str) -> Finished:
    done = subprocess.run(
        [*prefix, *bot.command(*args)],
        cwd=bot.cwd,
        env=bot.env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(
    "args",
    [("install", "MODEL"), ("rollback",), ("sync",), ("run",)],
    ids=lambda args: args[0],
)
def test_a_read_only_models_directory_is_one_line(
    bot: Bot, read_only: list[str], args: tuple[str, ...]
) -> None:
    embedded = bot.model.read_bytes()
    argv = [str(bot.model) if arg == "MODEL" else arg for arg in args]

    done = run_prefixed(bot, read_only, *argv)

    assert done.returncode == EXIT_FAILED
    line = assert_said_once(done, "error: ")
    assert str(bot.models) in line
    assert "read-only" in line.lower() or "permission denied" in line.lower()
    assert bot.model.read_bytes() == embedded


@pytest.mark.parametrize("args", [("status",), ("--smoke",)], ids=" ".join)
def test_read_only_commands_work_on_a_read_only_models_directory(
    bot: Bot, read_only: list[str], args: tuple[str, ...]
) -> None:
    done = run_prefixed(bot, read_only, *args)

    assert done.returncode == 0, done.stderr
    no_traceback(done)


# -- the ops port ---------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_an_ops_port_in_use_is_one_line(bot: Bot, taken_port: int) -> None:
    write_settings(bot.settings.parent, ops={"port": taken_port})

    done = bot.run("run")

    assert done.returncode == EXIT_FAILED
    line = assert_said_once(done, "error: ")
    assert f"127.0.0.1:{taken_port}" in line
    assert "in use" in line
    assert "ops.port" in line


# -- usage the brain cannot serve -----------------------------------------------------------------


@pytest.mark.parametrize("args", [("rollback", "noslot"), ("install", "MODEL", "--slot", "noslot")])
def test_an_unknown_slot_is_one_line(bot: Bot, args: tuple[str, ...]) -> None:
    argv = [str(bot.model) if arg == "MODEL" else arg for arg in args]

    done = bot.run(*argv)

    assert done.returncode == EXIT_FAILED
    line = assert_said_once(done, "refused: ")
    assert "unknown slot 'noslot'" in line
    assert SLOT in line  # says which slots there are


# -- settings -------------------------------------------------------------------------------------


def test_running_without_a_settings_file_says_the_defaults_are_used(bot: Bot) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "status"],
        cwd=bot.cwd,  # no settings.yaml here, and none named
        env=app_environment(MODELS__DIR=str(bot.models)),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    [announcement] = [line for line in done.stderr.splitlines() if "settings" in line.lower()]
    assert "settings.yaml" in announcement
    assert "not found" in announcement
    assert "defaults" in announcement


def test_a_missing_named_settings_file_is_usage(bot: Bot) -> None:
    done = bot.run("--settings", str(bot.cwd / "nowhere.yaml"), "status")

    assert done.returncode == EXIT_USAGE
    assert "nowhere.yaml does not exist" in assert_said_once(done, "configuration error: ")


# -- Ctrl-C -------------------------------------------------------------------------------------

# From the first instructions (imports, the malloc re-exec) through settings, logging, the brain's
# start and the ops server, to the running host.
INTERRUPT_AFTER_SECONDS = (0.05, 0.3, 0.6, 0.9, 1.2, 1.6, 2.2, 3.0)


@pytest.mark.parametrize("delay", INTERRUPT_AFTER_SECONDS)
def test_ctrl_c_at_any_moment_of_start_up_exits_quietly(bot: Bot, delay: float) -> None:
    process = subprocess.Popen(
        bot.command("run"),
        cwd=bot.cwd,
        env=bot.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()  # the interrupt was lost: fail, and leave no process or pipe behind
        process.communicate()
        raise

    finished = Finished(process.returncode, stdout, stderr)
    no_traceback(finished)
    assert finished.said == []
    # Stopped as the host stops (0), interrupted before it ran (130), or, when the signal came
    # before Python had installed its handler, ended by the signal itself.
    assert process.returncode in {0, EXIT_INTERRUPTED, -signal.SIGINT}


def test_ctrl_c_of_a_one_shot_command_exits_130_quietly(bot: Bot, taken_port: int) -> None:
    """A sync waiting on an API that never answers, interrupted: 130, and nothing said."""
    write_settings(
        bot.settings.parent,
        cloud_sync={"enabled": True, "min_interval_minutes": 0},
        github={"api_url": f"http://127.0.0.1:{taken_port}", "token": "t0ken"},
    )
    process = subprocess.Popen(
        bot.command("sync"),
        cwd=bot.cwd,
        env=bot.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "Starting model synchronization" in line:
            break
    process.send_signal(signal.SIGINT)
    stdout, rest = process.communicate(timeout=RUN_TIMEOUT)

    finished = Finished(process.returncode, stdout, "".join(lines) + rest)
    no_traceback(finished)
    assert finished.said == []
    assert process.returncode == EXIT_INTERRUPTED


# -- global options -------------------------------------------------------------------------------


def test_global_options_are_accepted_after_the_subcommand(bot: Bot) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "status", "--json", "--settings", str(bot.settings)],
        cwd=bot.cwd,
        env=app_environment(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=False,
    )
    logged = subprocess.run(
        [*bot.command("status"), "--log-json"],
        cwd=bot.cwd,
        env=app_environment(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"][SLOT]["path"] == str(bot.model)
    assert logged.returncode == 0, logged.stderr
    assert all(json.loads(line) for line in logged.stderr.splitlines())


def test_a_global_option_before_the_subcommand_is_not_reset_by_it(bot: Bot) -> None:
    done = bot.run("--log-json", "status")  # bot.run puts --settings first, too

    assert done.returncode == 0, done.stderr
    assert all(json.loads(line) for line in done.stderr.splitlines())
