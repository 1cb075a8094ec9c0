"""The command line, run as a user runs it: `python -m app` in a subprocess on real files.

Every run reads a settings file in a temporary folder whose relative ``models.dir`` points at a
copy of the embedded model, from a working directory elsewhere, so a run can never touch the
repository's own ``models/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.install.lock import DirectoryLock
from app.lifecycle.report import describe

SLOT = "unified_brain"
EMBEDDED_VERSION = "embedded-1"
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} \| ")
BACKUP_NAME = re.compile(rf"^{SLOT}_\d{{8}}_\d{{6}}\.onnx$")
RUN_TIMEOUT = 60


def app_environment(**extra: str) -> dict[str, str]:
    """This process's environment without settings overrides, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "__" not in name
        and name.upper() not in {"GITHUB_TOKEN", "GITHUB_API_URL", "APP_SETTINGS"}
    }
    env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def write_settings(folder: Path, **sections: Mapping[str, Any]) -> Path:
    """A settings file in `folder`: relative models dir, fast bars, no network, no waiting."""
    document: dict[str, dict[str, Any]] = {
        "cloud_sync": {"enabled": False},
        "models": {"dir": "models", "lock_wait_seconds": 0, "watch_seconds": 0.2},
        "market": {"bars_per_second": 50},
        "brain": {"log_every": 1},
        "ops": {"port": 0},
    }
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Finished:
    """A finished `python -m app` run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def said(self) -> list[str]:
        """What the command told its user on stderr: every line that is not a log line."""
        return [line for line in self.stderr.splitlines() if not LOG_LINE.match(line)]


@dataclass
class Bot:
    """A bot's folder: settings file, models directory, and a working directory elsewhere."""

    settings: Path
    models: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=app_environment)

    @property
    def model(self) -> Path:
        return self.models / f"{SLOT}.onnx"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app", "--settings", str(self.settings), *args]

    def run(self, *args: str | Path, env: Mapping[str, str] | None = None) -> Finished:
        done = subprocess.run(
            self.command(*map(str, args)),
            cwd=self.cwd,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return Finished(done.returncode, done.stdout, done.stderr)

    def status(self) -> dict[str, Any]:
        done = self.run("status", "--json")
        assert done.returncode == 0, done.stderr
        model: dict[str, Any] = json.loads(done.stdout)["models"][SLOT]
        return model

    def files(self) -> set[str]:
        """Every file under the models directory except the lock file, which stays by design."""
        return {
            str(path.relative_to(self.models))
            for path in self.models.rglob("*")
            if path.is_file() and not path.name.endswith(".lock")
        }

    def backup(self, name: str) -> Path:
        return self.models / "backup" / name


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=write_settings(tmp_path), models=models_dir, cwd=cwd)


def assert_said_once(finished: Finished, prefix: str) -> str:
    """The run told its user one line starting with `prefix`, and printed no traceback."""
    assert "Traceback" not in finished.stderr
    [line] = finished.said
    assert line.startswith(prefix), line
    return line


# -- smoke -------------------------------------------------------------------------------------


def test_smoke_decides_once_and_names_the_version(bot: Bot) -> None:
    done = bot.run("--smoke")

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"smoke test passed: (buy|sell|hold) \(confidence \d\.\d\d\) by {SLOT}={EMBEDDED_VERSION}",
        done.stdout.strip(),
    )


def test_smoke_on_a_corrupted_model_fails_with_one_line(bot: Bot) -> None:
    content = bot.model.read_bytes()
    bot.model.write_bytes(content[: len(content) // 2])

    done = bot.run("--smoke")

    assert done.returncode == 1
    line = assert_said_once(done, "smoke test failed: ")
    assert SLOT in line
    assert done.stdout == ""


# -- install -----------------------------------------------------------------------------------


def test_install_serves_the_new_model_and_keeps_a_backup(bot: Bot, model_file: Any) -> None:
    embedded = bot.model.read_bytes()
    before = bot.status()
    candidate = model_file("good.onnx", seed=7, version="v-good")

    done = bot.run("install", candidate)

    assert done.returncode == 0, done.stderr
    assert f"installed {SLOT} version v-good" in done.stdout
    after = bot.status()
    assert after["sha256"] == sha256(candidate) != before["sha256"]
    assert after["version"] == "v-good"
    provenance = after["provenance"]
    assert (provenance["source"], provenance["sha256"]) == ("cli", sha256(candidate))
    assert before["backups"] == []
    [backup] = after["backups"]
    assert BACKUP_NAME.fullmatch(backup)
    assert bot.backup(backup).read_bytes() == embedded

    again = bot.run("install", candidate)

    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged")
    models = {name for name in bot.files() if not name.startswith(".sync/")}
    assert models == {f"{SLOT}.onnx", f"backup/{backup}"}


def wrong_width(folder: Path, model_file: Any) -> Path:
    path: Path = model_file("wide.onnx", n_features=8)
    return path


def empty(folder: Path, model_file: Any) -> Path:
    path = folder / "empty.onnx"
    path.touch()
    return path


def missing(folder: Path, model_file: Any) -> Path:
    return folder / "missing.onnx"


def directory(folder: Path, model_file: Any) -> Path:
    path = folder / "a-folder.onnx"
    path.mkdir()
    return path


def not_onnx(folder: Path, model_file: Any) -> Path:
    path = folder / "notes.onnx"
    path.write_bytes(b"this is not a model\n" * 10)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(wrong_width, "dimension 1 is 8, expected 16", id="wrong-width"),
        pytest.param(empty, "is empty", id="empty"),
        pytest.param(missing, "does not exist", id="missing"),
        pytest.param(directory, "is a directory", id="directory"),
        pytest.param(not_onnx, "cannot be loaded", id="not-onnx"),
    ],
)
def test_install_refuses_a_bad_model_and_changes_nothing(
    bot: Bot,
    model_file: Any,
    tmp_path: Path,
    make: Callable[[Path, Any], Path],
    reason: str,
) -> None:
    embedded = bot.model.read_bytes()
    listing = bot.files()
    candidate = make(tmp_path, model_file)

    done = bot.run("install", candidate)

    assert done.returncode == 1
    assert reason in assert_said_once(done, "refused: ")
    assert done.stdout == ""
    assert bot.model.read_bytes() == embedded
    assert bot.files() == listing


def test_a_refusal_names_each_problem_once(bot: Bot, model_file: Any) -> None:
    done = bot.run("install", model_file("wide.onnx", n_features=8))

    problems = assert_said_once(done, "refused: ").split(": ", 2)[-1].split("; ")
    assert len(problems) == len(set(problems))


def test_install_is_kept_out_while_another_process_writes(bot: Bot, model_file: Any) -> None:
    embedded = bot.model.read_bytes()
    held = DirectoryLock(bot.models / ".sync" / "write.lock")
    try:
        done = bot.run("install", model_file("good.onnx", seed=7))
    finally:
        held.release()

    assert done.returncode == 1
    line = assert_said_once(done, "error: ")
    assert f"process {os.getpid()}" in line
    assert str(bot.models) in line
    assert bot.model.read_bytes() == embedded


# -- rollback ----------------------------------------------------------------------------------


def test_rollback_restores_the_previous_model_then_a_named_backup(
    bot: Bot, model_file: Any
) -> None:
    embedded_sha = sha256(bot.model)
    candidate = model_file("good.onnx", seed=7, version="v-good")
    assert bot.run("install", candidate).returncode == 0

    done = bot.run("rollback")

    assert done.returncode == 0, done.stderr
    assert f"rolled back {SLOT} version {EMBEDDED_VERSION}" in done.stdout
    restored = bot.status()
    assert restored["sha256"] == embedded_sha
    [good_backup] = [
        name for name in restored["backups"] if sha256(bot.backup(name)) != embedded_sha
    ]

    named = bot.run("rollback", SLOT, "--to", good_backup)

    assert named.returncode == 0, named.stderr
    assert bot.status()["sha256"] == sha256(candidate)


@pytest.mark.parametrize(
    "args",
    [("rollback",), ("rollback", "--to", f"{SLOT}_20200101_000000.onnx")],
    ids=["previous", "named"],
)
def test_rollback_without_a_backup_is_refused(bot: Bot, args: tuple[str, ...]) -> None:
    embedded = bot.model.read_bytes()

    done = bot.run(*args)

    assert done.returncode == 1
    assert "backup" in assert_said_once(done, "refused: ")
    assert bot.model.read_bytes() == embedded


# -- settings and status -----------------------------------------------------------------------


def test_bad_settings_exit_2_naming_the_key(bot: Bot) -> None:
    write_settings(bot.settings.parent, cloud_sync={"interval_minutes": 2})

    done = bot.run("status")

    assert done.returncode == 2
    line = assert_said_once(done, "configuration error: ")
    assert "cloud_sync.interval_minutes" in line
    assert "greater than or equal to 5" in line


def test_status_json_from_the_file_named_by_app_settings(bot: Bot) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "status", "--json"],
        cwd=bot.cwd,
        env=app_environment(APP_SETTINGS=str(bot.settings)),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=RUN_TIMEOUT,
        check=True,
    )

    report = json.loads(done.stdout)
    assert report == {
        "models": {
            SLOT: {
                "path": str(bot.model),
                "sha256": sha256(bot.model),
                "version": EMBEDDED_VERSION,
                "size_bytes": bot.model.stat().st_size,
                "provenance": None,  # the embedded model came with no artifact
                "backups": [],
                "problem": None,
                "lifecycle": describe(None, mode="canary"),  # no host has judged anything
            }
        },
        "last_sync": None,
        "trading": {"journal": str(bot.models / ".sync" / "journal.sqlite3"), "versions": {}},
    }


# -- the long-running host ---------------------------------------------------------------------


class RunningHost:
    """`python -m app run` in the background, its log lines collected as they arrive."""

    def __init__(self, command: list[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._arrived:
                self.lines.append(line.rstrip("\n"))
                self._arrived.notify_all()

    def wait_for(
        self, wanted: Callable[[str], bool], *, after: int = 0, timeout: float = 20
    ) -> int:
        """The index of the first line from `after` on that is `wanted`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for index in range(after, len(self.lines)):
                    if wanted(self.lines[index]):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    output = "\n".join(self.lines)
                    pytest.fail(f"the host never logged the line wanted; it logged:\n{output}")
                self._arrived.wait(min(remaining, 0.1))

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then the exit code (within `timeout` seconds)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def start_host(bot: Bot) -> Iterator[Callable[..., RunningHost]]:
    """A factory for background hosts, each closed at teardown."""
    started: list[RunningHost] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> RunningHost:
        host = RunningHost(bot.command(*args), cwd=bot.cwd, env=bot.env if env is None else env)
        started.append(host)
        return host

    yield start
    for host in started:
        host.close()


def is_decision(version: str) -> Callable[[str], bool]:
    return lambda line: "📈 [TRADING]" in line and f"{SLOT}={version}" in line


def test_run_picks_up_an_install_from_another_process_and_stops_on_sigterm(
    bot: Bot, model_file: Any, start_host: Callable[..., RunningHost]
) -> None:
    host = start_host("run")
    host.wait_for(is_decision(EMBEDDED_VERSION))

    installed = bot.run("install", model_file("live.onnx", seed=11, version="v-live"))

    assert installed.returncode == 0, installed.stderr
    reloaded = host.wait_for(lambda line: "Model reloaded from disk" in line)
    assert f"{SLOT} version v-live" in host.lines[reloaded]
    host.wait_for(is_decision("v-live"), after=reloaded)
    assert host.stop(timeout=10) == 0
    assert any("Stopped" in line for line in host.lines)
    assert not any(is_decision(EMBEDDED_VERSION)(line) for line in host.lines[reloaded:])
