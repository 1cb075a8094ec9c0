"""``python -m app quarantine [--json]``, ``quarantine release SHA256`` and
``POST /admin/quarantine/release``, as a user and an operator run them: the command line in a
subprocess on real files (``tests/test_cli.py``'s bot), the ops server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.install.layout import ModelsLayout
from app.install.quarantine import Quarantine, QuarantineEntry
from app.install.records import Origin
from tests.artifacts import model_bytes, sha256_hex
from tests.fakes.github import DOWNLOAD_ARTIFACT, FakeGitHub
from tests.ops_stack import OpsStack, ops_settings, running_ops
from tests.sync_host import good_run
from tests.test_cli import RUN_TIMEOUT, Bot, Finished, assert_said_once, sha256, write_settings

SLOT = "unified_brain"
T0 = datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)
ADMIN_TOKEN = "admin-token-for-tests"
FROM_GITHUB = Origin(source="github", run_id=7, artifact_id=42, artifact_name="trained-model")


@pytest.fixture
def bot(tmp_path: Path, models_dir: Path) -> Bot:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return Bot(settings=write_settings(tmp_path), models=models_dir, cwd=cwd)


def store(models_dir: Path) -> Quarantine:
    return Quarantine(ModelsLayout(models_dir))


def add(models_dir: Path, digest: str, *, at: datetime = T0, **fields: Any) -> QuarantineEntry:
    values: dict[str, Any] = {"slot": SLOT, "version": "v2", "why": "rolled back by the judge"}
    entry = QuarantineEntry(sha256=digest, at=at, **(values | fields))
    store(models_dir).add(entry)
    return entry


# -- listing ----------------------------------------------------------------------------------


def test_quarantine_lists_each_model_on_one_line_newest_first(bot: Bot) -> None:
    add(bot.models, "a" * 64, version="v1", why="rejected by hand")
    add(bot.models, "b" * 64, at=T0 + timedelta(hours=1), why="lost 2%\nin an hour")

    done = bot.run("quarantine")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{'b' * 12}  {SLOT}  v2  2025-01-08T15:30:22Z  lost 2% in an hour",
        f"{'a' * 12}  {SLOT}  v1  2025-01-08T14:30:22Z  rejected by hand",
    ]


def test_quarantine_json_has_every_field_and_the_origin(bot: Bot) -> None:
    add(bot.models, "a" * 64, origin=FROM_GITHUB)

    done = bot.run("quarantine", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "quarantine": [
            {
                "sha256": "a" * 64,
                "slot": SLOT,
                "version": "v2",
                "at": "2025-01-08T14:30:22Z",
                "why": "rolled back by the judge",
                "origin": FROM_GITHUB.model_dump(mode="json"),
            }
        ]
    }


def test_listing_an_empty_quarantine_writes_nothing(bot: Bot) -> None:
    done = bot.run("quarantine")

    assert (done.returncode, done.stdout) == (0, "no model is quarantined\n")
    assert not (bot.models / ".sync").exists()


def test_an_unreadable_quarantine_file_is_one_line_and_exit_1(bot: Bot) -> None:
    (bot.models / ".sync").mkdir()
    (bot.models / ".sync" / "quarantine.json").write_text("{")

    done = bot.run("quarantine")

    assert done.returncode == 1
    line = assert_said_once(done, "error: the quarantine file ")
    assert "unreadable" in line


# -- release ------------------------------------------------------------------------------------


def test_release_by_a_prefix_says_what_it_released(bot: Bot) -> None:
    add(bot.models, "a" * 64)
    kept = add(bot.models, "b" * 64)

    done = bot.run("quarantine", "release", "a" * 12)

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"released {'a' * 12} ({SLOT} version v2, quarantined since 2025-01-08T14:30:22Z: "
        "rolled back by the judge)\n"
    )
    assert store(bot.models).entries() == [kept]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("c" * 12, "error: no quarantined model's SHA-256 starts with cccccccccccc"),
        ("abcdabcd", "error: abcdabcd starts the SHA-256 of 2 quarantined models"),
        ("abc", "error: 'abc' is not a SHA-256 or a prefix of one of at least 8 hex digits"),
    ],
    ids=["unknown", "ambiguous", "too-short"],
)
def test_release_of_no_single_model_exits_1_with_one_line(bot: Bot, given: str, said: str) -> None:
    add(bot.models, "abcdabcd" + "1" * 56)
    add(bot.models, "abcdabcd" + "2" * 56)

    done = bot.run("quarantine", "release", given)

    assert done.returncode == 1
    assert assert_said_once(done, said)
    assert len(store(bot.models).entries()) == 2


def test_install_refuses_a_quarantined_model_until_it_is_released(
    bot: Bot, model_file: Any
) -> None:
    candidate = model_file("v2.onnx", seed=7, version="v2")
    add(bot.models, sha256(candidate))

    refused = bot.run("install", candidate)
    released = bot.run("quarantine", "release", sha256(candidate)[:12])
    installed = bot.run("install", candidate)

    assert refused.returncode == 1
    line = assert_said_once(refused, f"refused: model sha256 {sha256(candidate)[:12]} (version v2)")
    assert "is quarantined: rolled back by the judge" in line
    assert released.returncode == 0, released.stderr
    assert installed.returncode == 0, installed.stderr
    assert bot.status()["sha256"] == sha256(candidate)


# -- sync --json -------------------------------------------------------------------------------


async def run_beside(bot: Bot, *args: str) -> Finished:
    """`bot.run` without blocking the event loop, which serves the fake GitHub."""
    process = await asyncio.create_subprocess_exec(
        *bot.command(*args),
        cwd=bot.cwd,
        env=bot.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def test_sync_json_says_quarantined_and_installs_once_released(
    bot: Bot, fake: FakeGitHub
) -> None:
    github = {"api_url": fake.api_url, "token": fake.token, "owner": fake.owner}
    write_settings(
        bot.settings.parent,
        github=github | {"repository": fake.repository},
        cloud_sync={"enabled": True, "min_interval_minutes": 0},
    )
    run, artifact_id = good_run(fake, "v2")
    digest = sha256_hex(model_bytes("v2"))
    origin = FROM_GITHUB.model_copy(update={"run_id": run.id, "artifact_id": artifact_id})
    add(bot.models, digest, origin=origin)

    refused = await run_beside(bot, "sync", "--force", "--json")
    released = await run_beside(bot, "quarantine", "release", digest[:12])
    installed = await run_beside(bot, "sync", "--force", "--json")

    assert refused.returncode == 0, refused.stderr
    report = json.loads(refused.stdout)
    assert report["outcome"] == "rejected"
    assert "is quarantined" in report["reason"]
    assert report["artifact"]["id"] == artifact_id
    assert released.returncode == 0, released.stderr
    assert json.loads(installed.stdout)["outcome"] == "installed"
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1  # only after the release


# -- POST /admin/quarantine/release -------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin_stack(models_dir: Path) -> AsyncIterator[OpsStack]:
    settings = ops_settings(models_dir, ops={"admin_token": ADMIN_TOKEN})
    async with running_ops(settings) as stack:
        add(models_dir, "a" * 64)
        add(models_dir, "abcdabcd" + "1" * 56)
        add(models_dir, "abcdabcd" + "2" * 56)
        yield stack


async def release(stack: OpsStack, body: bytes, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
    return await stack.post("/admin/quarantine/release", body=body, headers=bearer(token))


async def test_the_admin_token_releases_a_model(admin_stack: OpsStack) -> None:
    status, answer = await release(admin_stack, b'{"sha256": "AAAAAAAA"}')

    assert status == 200
    assert answer["ok"] is True
    assert answer["released"]["sha256"] == "a" * 64
    assert admin_stack.models.quarantine.holds("a" * 64) is None


async def test_releasing_a_model_not_quarantined_is_404(admin_stack: OpsStack) -> None:
    status, answer = await release(admin_stack, json.dumps({"sha256": "c" * 64}).encode())

    assert status == 404
    assert answer["ok"] is False
    assert "no quarantined model" in answer["reason"]


async def test_release_without_the_token_is_401_and_releases_nothing(
    admin_stack: OpsStack,
) -> None:
    status, _ = await release(admin_stack, b'{"sha256": "aaaaaaaa"}', token="wrong")

    assert status == 401
    assert admin_stack.models.quarantine.holds("a" * 64) is not None


async def test_release_is_off_without_an_admin_token(models_dir: Path) -> None:
    async with running_ops(ops_settings(models_dir)) as stack:
        status, _ = await release(stack, b'{"sha256": "aaaaaaaa"}', token="")

    assert status == 404


BAD_BODIES = {
    "none": (b"", "sha256: Field required"),
    "not-json": (b"not json", "not JSON"),
    "not-object": (b'["aaaaaaaa"]', "JSON object"),
    "number": (b'{"sha256": 12345678}', "sha256: Input should be a valid string"),
    "short": (b'{"sha256": "aaaa"}', "at least 8 characters"),
    "not-hex": (b'{"sha256": "zzzzzzzz"}', "should match pattern"),
    "extra": (b'{"sha256": "aaaaaaaa", "slot": "x"}', "slot: Extra inputs"),
    "ambiguous": (b'{"sha256": "abcdabcd"}', "starts the SHA-256 of 2 quarantined models"),
    "big": (b'{"sha256": "' + b"a" * 70_000 + b'"}', "body is over"),
}


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_release_with_a_bad_body_is_400_never_500(
    admin_stack: OpsStack, body: bytes, reason: str
) -> None:
    status, answer = await release(admin_stack, body)

    assert status == 400
    assert reason in answer["error"]
    assert len(admin_stack.models.quarantine.entries()) == 3


async def test_release_while_the_quarantine_is_unreadable_is_409(admin_stack: OpsStack) -> None:
    admin_stack.models.quarantine.path.write_text("{")

    status, answer = await release(admin_stack, b'{"sha256": "aaaaaaaa"}')

    assert status == 409
    assert "unreadable" in answer["reason"]
