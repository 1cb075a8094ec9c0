"""`--log-json`: one flat JSON object per line, the known fields (slot, version, action,
outcome, artifact, reason) as top-level keys, messages without the seed's emoji markers, and
no secret, whether the fields come from the message's call site or from stdlib logging."""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from app.logs import configure_logging
from tests.test_cli import Bot, RunningHost, app_environment, write_settings

TOKEN = "ghp_SECRETVALUE123"
BASE_KEYS = {"time", "level", "message", "logger"}


def is_emoji(character: str) -> bool:
    return character in "\ufe0f\u200d" or (
        ord(character) >= 0x2190 and unicodedata.category(character) == "So"
    )


def objects(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_flat(record: dict[str, Any]) -> None:
    assert record.keys() >= BASE_KEYS
    assert "record" not in record  # loguru's serialize=True nests everything under "record"
    assert not any(is_emoji(character) for character in record["message"])


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(
        settings=write_settings(tmp_path),
        models=models_dir,
        cwd=cwd,
        env=app_environment(GITHUB_TOKEN=TOKEN),
    )


def test_an_install_logs_flat_objects_without_emoji(bot: Bot, model_file: Any) -> None:
    done = bot.run("--log-json", "install", model_file("good.onnx", seed=3))

    assert done.returncode == 0, done.stderr
    records = objects(done.stderr)
    for record in records:
        assert_flat(record)
    messages = [record["message"] for record in records]
    assert any(m.startswith("[MODEL-RELOAD] Starting model reload:") for m in messages)
    assert {record["level"] for record in records} <= {"INFO", "WARNING", "ERROR"}
    assert TOKEN not in done.stderr


def test_a_failure_logs_its_reason_as_a_field(bot: Bot) -> None:
    first = RunningHost(bot.command("run"), cwd=bot.cwd, env=bot.env)
    try:
        first.wait_for(lambda line: "[TRADING] 20" in line)
        second = bot.run("--log-json", "run")
        assert first.stop() == 0
    finally:
        first.close()

    assert second.returncode == 1
    [error] = [
        json.loads(line)
        for line in second.stderr.splitlines()
        if line.startswith("{") and json.loads(line)["level"] == "ERROR"
    ]
    assert_flat(error)
    assert error["outcome"] == "failed"
    assert "already running" in error["reason"]
    assert error["message"] == error["reason"]


def below(threshold: float) -> Any:
    """A JSON decision line whose confidence is under `threshold`."""

    def wanted(line: str) -> bool:
        if not line.startswith("{"):
            return False
        record = json.loads(line)
        return "action" in record and record["confidence"] < threshold

    return wanted


def test_host_decisions_carry_action_slot_and_version(bot: Bot) -> None:
    threshold = 0.99  # the embedded model is often, not always, that sure
    write_settings(
        bot.settings.parent,
        brain={"confidence_threshold": threshold, "log_every": 1},
        market={"bars_per_second": 200},
    )
    host = RunningHost(bot.command("--log-json", "run"), cwd=bot.cwd, env=bot.env)
    try:
        at = host.wait_for(below(threshold), timeout=40)
        assert host.stop() == 0
    finally:
        host.close()

    decision = json.loads(host.lines[at])
    assert_flat(decision)
    assert decision["action"] == "hold"
    assert decision["best_action"] in {"sell", "hold", "buy"}
    assert decision["slot"] == "unified_brain"
    assert decision["version"] == "embedded-1"
    said = f"{decision['best_action']} {decision['confidence']:.2f} < {threshold:.2f}"
    assert decision["message"].startswith("[TRADING] ")
    assert f" hold ({said}) position " in decision["message"]
    assert all(json.loads(line) for line in host.lines)


# -- the sink in this process ----------------------------------------------------------------------


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    output = io.StringIO()
    configure_logging(stream=output, json_lines=True, secrets=[TOKEN])
    yield output
    logger.remove()
    logger.disable("app")
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_bound_fields_become_top_level_keys(stream: io.StringIO) -> None:
    logger.bind(slot="unified_brain", version="v2", outcome="installed", artifact="m.zip").info(
        "✅ [MODEL-RELOAD] Model reloaded successfully: unified_brain version v2"
    )

    [record] = objects(stream.getvalue())
    assert_flat(record)
    assert (
        record["message"] == "[MODEL-RELOAD] Model reloaded successfully: unified_brain version v2"
    )
    assert (record["slot"], record["version"], record["outcome"], record["artifact"]) == (
        "unified_brain",
        "v2",
        "installed",
        "m.zip",
    )
    assert record["level"] == "INFO"


def test_a_secret_is_redacted_from_messages_and_fields(stream: io.StringIO) -> None:
    logger.bind(reason=f"refused {TOKEN}").warning(f'⚠️ calling with {TOKEN} and "quotes"')
    logging.getLogger("aiohttp.client").warning(f"GET /?token={TOKEN}")

    text = stream.getvalue()
    assert TOKEN not in text
    first, second = objects(text)
    assert first["message"] == 'calling with *** and "quotes"'
    assert first["reason"] == "refused ***"
    assert second["message"] == "[aiohttp.client] GET /?token=***"


def test_an_exception_is_one_field_of_the_same_object(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        logger.opt(exception=error).error("❌ [CLOUD-SYNC] Sync cycle crashed: boom")

    [record] = objects(stream.getvalue())
    assert_flat(record)
    assert "RuntimeError: boom" in record["exception"]
