"""Logging: the seed's markers, JSON lines, stdlib routed into loguru, and no secret ever printed."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stamina.instrumentation
from loguru import logger

from app.containers import Core, resolve, trading_brain
from app.logs import configure_logging, printable
from tests.artifacts import model_artifact
from tests.conftest import make_settings
from tests.test_cli import LOG_LINE, Bot, RunningHost, app_environment, write_settings

SECRETS = {
    "GITHUB_TOKEN": "ghp_SECRETVALUE123",
    "OPS__WEBHOOK_SECRET": "whsec_SECRETVALUE456",
    "OPS__ADMIN_TOKEN": "admin_SECRETVALUE789",
    "ALERTS__PASSWORD": "smtp_SECRETVALUE000",
}
MARKERS = (
    "🔄 [MODEL-RELOAD] Starting model reload:",
    "💾 [MODEL-RELOAD] Backup created:",
    "✅ [MODEL-RELOAD] Model reloaded successfully",
)


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    """A bot whose environment carries every kind of secret the settings know."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(
        settings=write_settings(tmp_path),
        models=models_dir,
        cwd=cwd,
        env=app_environment(**SECRETS),
    )


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for secret in SECRETS.values():
            assert secret not in output


def assert_markers_in_order(messages: list[str], markers: tuple[str, ...] = MARKERS) -> None:
    positions = [
        next(i for i, message in enumerate(messages) if marker in message) for marker in markers
    ]
    assert positions == sorted(positions)


# -- the command line's output -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("--smoke",), ("--log-json", "--smoke"), ("status",), ("status", "--json")],
    ids=" ".join,
)
def test_no_secret_in_the_output_of_a_command(bot: Bot, args: tuple[str, ...]) -> None:
    done = bot.run(*args)

    assert done.returncode == 0, done.stderr
    assert done.stdout
    assert_no_secret(done.stdout, done.stderr)


def test_no_secret_in_a_configuration_error(bot: Bot) -> None:
    write_settings(bot.settings.parent, github={"ownr": "typo"})

    done = bot.run("status")

    assert done.returncode == 2
    assert "github.ownr" in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_the_default_command_runs_the_host_and_logs_no_secret(bot: Bot) -> None:
    host = RunningHost(bot.command(), cwd=bot.cwd, env=bot.env)  # no command means `run`
    try:
        host.wait_for(lambda line: "📈 [TRADING]" in line)
        assert host.stop() == 0
    finally:
        host.close()

    assert any("Stopped" in line for line in host.lines)
    assert_no_secret(*host.lines)


def test_an_install_logs_the_seeds_markers(bot: Bot, model_file: Any) -> None:
    done = bot.run("install", model_file("good.onnx", seed=3))

    assert done.returncode == 0, done.stderr
    log_lines = [line for line in done.stderr.splitlines() if LOG_LINE.match(line)]
    assert_markers_in_order(log_lines)
    assert_no_secret(done.stdout, done.stderr)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (fails on the first line that is not one)."""
    return [json.loads(line) for line in text.splitlines()]


def test_log_json_writes_one_json_object_per_line(bot: Bot, model_file: Any) -> None:
    done = bot.run("--log-json", "install", model_file("good.onnx", seed=3))

    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    messages = [line["message"] for line in lines]
    # The markers' text, without their emoji (JSON lines carry none).
    assert_markers_in_order(messages, tuple(marker.split(" ", 1)[1] for marker in MARKERS))
    assert_no_secret(done.stdout, done.stderr)


def test_json_lines_can_be_chosen_in_the_settings(bot: Bot) -> None:
    done = bot.run("status", env={**bot.env, "LOGGING__JSON_LINES": "true"})

    assert done.returncode == 0, done.stderr
    [line] = json_lines(done.stderr)
    assert "Serving unified_brain" in line["message"]


# -- configure_logging in this process ---------------------------------------------------------


def _pytests_own(handler: logging.Handler) -> bool:
    """pytest adds and removes its capture handlers around each test phase by itself."""
    return type(handler).__module__.startswith("_pytest")


@pytest.fixture
def configured() -> Iterator[Callable[..., io.StringIO]]:
    """configure_logging onto a StringIO; loguru, stdlib logging and stamina restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    added: list[logging.Handler] = []

    def configure(**options: Any) -> io.StringIO:
        stream = io.StringIO()
        configure_logging(stream=stream, **options)
        added.extend(root.handlers)
        return stream

    yield configure
    logger.remove()
    logger.configure(patcher=None)
    logger.disable("app")
    for handler in added:
        root.removeHandler(handler)
    for handler in handlers:
        if not _pytests_own(handler) and handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    stamina.instrumentation.set_on_retry_hooks(None)


def test_stdlib_logging_is_routed_into_loguru(configured: Callable[..., io.StringIO]) -> None:
    stream = configured()

    logging.getLogger("aiohttp.access").warning("127.0.0.1 GET /healthz 200")
    logging.getLogger("asyncio").info("loop started")
    logging.getLogger("aiohttp.client").debug("below the level")

    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("| WARNING | [aiohttp.access] 127.0.0.1 GET /healthz 200")
    assert lines[1].endswith("| INFO    | [asyncio] loop started")


def test_the_level_setting_filters(configured: Callable[..., io.StringIO]) -> None:
    stream = configured(level="WARNING")

    logger.info("ℹ️ too chatty")
    logger.warning("⚠️ worth saying")

    assert stream.getvalue().count("\n") == 1
    assert "worth saying" in stream.getvalue()


@pytest.mark.parametrize("json_lines_enabled", [False, True], ids=["text", "json"])
def test_a_configured_secret_is_redacted_from_every_message(
    configured: Callable[..., io.StringIO], json_lines_enabled: bool
) -> None:
    secret = SECRETS["GITHUB_TOKEN"]
    stream = configured(secrets=[secret, ""], json_lines=json_lines_enabled)

    logger.info(f"calling GitHub with {secret}")
    logging.getLogger("aiohttp.client").warning(f"GET /?token={secret}")

    output = stream.getvalue()
    assert secret not in output
    assert output.count("***") == 2


def test_a_secret_in_a_logged_exception_is_redacted(
    configured: Callable[..., io.StringIO],
) -> None:
    secret = SECRETS["GITHUB_TOKEN"]
    stream = configured(secrets=[secret])

    try:
        raise RuntimeError(f"GitHub refused {secret}")
    except RuntimeError as error:
        logger.opt(exception=error).error("❌ sync failed")

    assert "sync failed" in stream.getvalue()
    assert secret not in stream.getvalue()


# -- text from artifacts and servers cannot forge a line or drive the terminal (issue 8) --------

FORGED = "✅ [MODEL-RELOAD] Model reloaded successfully: unified_brain version trusted"
INJECTED_VERSION = f"v2\n2026-01-01 00:00:00.000 | INFO    | {FORGED}\x1b[2J\x1b[H\x07\u202e"


def test_printable_escapes_controls_and_keeps_the_rest() -> None:
    assert printable("a\nb\x1b[2J\u202e ✅ é\t") == "a\\x0ab\\x1b[2J\\u202e ✅ é\\x09"


async def test_a_version_with_a_newline_and_escapes_forges_no_line(
    configured: Callable[..., io.StringIO], models_dir: Path
) -> None:
    stream = configured()
    settings = make_settings(models_dir, github={"token": ""})
    async with aiohttp.ClientSession() as session:
        core = Core(config=settings, http=session, brain=trading_brain(settings))
        await (await resolve(core.models)).start()
        inbox = await resolve(core.inbox)
        inbox.directory.mkdir()
        dropped = inbox.directory / "injected.zip"
        dropped.write_bytes(model_artifact(INJECTED_VERSION))
        os.utime(dropped, (0, 0))

        results = await inbox.process_pending()

    assert [r.outcome for r in results] == ["installed"]
    output = stream.getvalue()
    lines = output.splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert not any(line.endswith(FORGED) for line in lines)
    assert "\x1b" not in output
    assert "\x07" not in output
    assert "\u202e" not in output
    assert "v2\\x0a2026-01-01" in output  # still there, escaped
