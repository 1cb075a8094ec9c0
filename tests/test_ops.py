"""The ops server as an operator and Prometheus see it: a real OpsServer on 127.0.0.1, built by
the Application container around a real brain (``tests/ops_stack.py``), with the fake GitHub
behind the sync service."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dependency_injector import providers

from app.containers import Application, resolve
from app.errors import ConfigurationError
from app.ops import OpsServer
from app.settings import load_settings
from tests.artifacts import model_artifact
from tests.fakes.github import LIST_RUNS, FakeGitHub
from tests.metrics import labels_of, value
from tests.ops_stack import (
    EMBEDDED_VERSION,
    FEATURES,
    SLOT,
    OpsStack,
    ops_settings,
    running_ops,
)

ADMIN_TOKEN = "admin-token-for-tests"


class TickingClock:
    """Each call is `step` later than the one before: one backup per second, or the same one."""

    def __init__(self, step: timedelta = timedelta(seconds=1)) -> None:
        self.now = datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def stack(models_dir: Path, fake: FakeGitHub) -> AsyncIterator[OpsStack]:
    async with running_ops(ops_settings(models_dir, fake)) as running:
        yield running


# -- probes -----------------------------------------------------------------------------------


async def test_healthz_answers_while_the_server_runs(stack: OpsStack) -> None:
    assert await stack.get("/healthz") == (200, {"status": "alive"})


async def test_readyz_is_ready_once_the_brain_serves_the_file_on_disk(stack: OpsStack) -> None:
    assert await stack.get("/readyz") == (200, {"ready": True})


async def test_readyz_is_503_when_the_slot_file_is_not_the_model_serving(
    stack: OpsStack, model_file: Any
) -> None:
    active = stack.brain.snapshot.models[SLOT].path
    model_file("other.onnx", seed=7).replace(active)  # another process, no reload

    status, body = await stack.get("/readyz")

    assert status == 503
    assert body["ready"] is False
    assert "the file on disk is not the model serving" in body["reason"]
    assert SLOT in body["reason"]


async def test_readyz_is_503_when_the_slot_file_is_gone(stack: OpsStack) -> None:
    stack.brain.snapshot.models[SLOT].path.unlink()

    status, body = await stack.get("/readyz")

    assert status == 503
    assert "is missing" in body["reason"]


async def test_readyz_is_503_before_the_brain_has_loaded(models_dir: Path) -> None:
    settings = ops_settings(models_dir)
    async with aiohttp.ClientSession() as http:
        container = Application(config=settings)
        container.http.override(providers.Object(http))
        server: OpsServer = await resolve(container.ops)  # brain built, never started
        await server.start()
        try:
            async with http.get(f"http://127.0.0.1:{server.port}/readyz") as response:
                assert response.status == 503
                assert "has not loaded" in (await response.json())["reason"]
        finally:
            await server.stop()


# -- every metric moves when its event happens ---------------------------------------------------


async def test_metrics_count_and_time_decisions(stack: OpsStack) -> None:
    before = await stack.metrics()
    actions = [stack.brain.decide(FEATURES).action for _ in range(3)]

    after = await stack.metrics()

    for action in set(actions):
        counted = value(after, "trading_brain_decisions_total", action=action) or 0
        assert counted - (value(before, "trading_brain_decisions_total", action=action) or 0) == (
            actions.count(action)
        )
    assert value(after, "trading_brain_decision_seconds_count") == 3
    assert (value(after, "trading_brain_decision_seconds_sum") or 0) > 0


async def test_metrics_follow_an_install_to_the_new_version(
    stack: OpsStack, model_file: Any
) -> None:
    before = await stack.metrics()
    [info_before] = labels_of(before, "trading_brain_active_model_info")
    assert info_before["version"] == EMBEDDED_VERSION

    assert await stack.brain.reload_models(model_file(version="2.0.0", seed=3))

    after = await stack.metrics()
    installed = value(after, "trading_brain_reload_seconds_count", outcome="installed")
    assert installed == 1 + (
        value(before, "trading_brain_reload_seconds_count", outcome="installed") or 0
    )
    [info] = labels_of(after, "trading_brain_active_model_info")
    assert info == {
        "slot": SLOT,
        "version": "2.0.0",
        "sha256": stack.brain.snapshot.models[SLOT].sha256,
        "run_id": "",
    }
    assert info["sha256"] != info_before["sha256"]


async def test_metrics_count_a_refused_install(stack: OpsStack, model_file: Any) -> None:
    assert not await stack.brain.reload_models(model_file(n_features=5))

    metrics = await stack.metrics()

    assert value(metrics, "trading_brain_reload_seconds_count", outcome="refused") == 1
    assert value(metrics, "trading_brain_reload_seconds_count", outcome="installed") == 0
    [info] = labels_of(metrics, "trading_brain_active_model_info")
    assert info["version"] == EMBEDDED_VERSION


async def test_metrics_follow_a_sync_from_github(stack: OpsStack, fake: FakeGitHub) -> None:
    run = fake.add_run()
    content = model_artifact("3.0.0")
    artifact = fake.add_artifact(run, content=content)
    started = time.time()

    report = await stack.sync.synchronize_models(force=True)

    assert report.outcome == "installed"
    metrics = await stack.metrics()
    assert value(metrics, "model_sync_cycles_total", outcome="installed") == 1
    assert value(metrics, "model_sync_artifacts_total", outcome="installed", reason="ok") == 1
    assert value(metrics, "model_sync_download_bytes_total") == len(content)
    assert value(metrics, "model_sync_download_seconds_count") == 1
    assert value(metrics, "model_sync_github_rate_limit_remaining") == fake.rate_limit_remaining
    last_success = value(metrics, "model_sync_last_success_timestamp_seconds") or 0
    assert started - 1 <= last_success <= time.time() + 1
    [info] = labels_of(metrics, "trading_brain_active_model_info")
    assert (info["version"], info["run_id"]) == ("3.0.0", str(run.id))
    assert fake.blob.downloads == 1
    assert report.artifact is not None
    assert report.artifact["id"] == artifact.id


async def test_metrics_show_a_breaker_opening(models_dir: Path, fake: FakeGitHub) -> None:
    settings = ops_settings(
        models_dir,
        fake,
        resilience={"max_retries": 0, "breaker_failure_threshold": 1, "breaker_open_seconds": 600},
    )
    async with running_ops(settings) as stack:
        fake.fail_next(LIST_RUNS, status=502)

        report = await stack.sync.synchronize_models(force=True)

        assert report.outcome == "failed"
        metrics = await stack.metrics()
        open_level = 2
        assert (
            value(metrics, "model_sync_circuit_breaker_state", operation="github.list_runs")
            == open_level
        )
        assert value(metrics, "model_sync_cycles_total", outcome="failed") == 1
        _, status = await stack.get("/status")
        assert status["breakers"] == {"github.list_runs": "open"}


# -- status -----------------------------------------------------------------------------------


async def test_status_shows_provenance_backups_last_sync_and_breakers(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    run = fake.add_run(head_sha="c0ffee" * 6 + "beef")
    artifact = fake.add_artifact(run, content=model_artifact("4.0.0"))
    await stack.sync.synchronize_models(force=True)

    status, report = await stack.get("/status")

    assert status == 200
    model = report["models"][SLOT]
    assert model["version"] == "4.0.0"
    assert model["sha256"] == sha(Path(model["path"]))
    provenance = model["provenance"]
    assert provenance["run_id"] == run.id
    assert provenance["artifact_id"] == artifact.id
    assert provenance["head_sha"] == run.head_sha
    assert provenance["branch"] == "main"
    assert model["backups"] == [p.name for p in stack.models.backups()]
    assert len(model["backups"]) == 1
    assert report["last_sync"]["outcome"] == "installed"
    assert report["last_sync"]["artifact_id"] == artifact.id
    assert report["breakers"] == {
        "github.download_artifact": "closed",
        "github.list_artifacts": "closed",
        "github.list_runs": "closed",
    }


# -- binding ----------------------------------------------------------------------------------


def test_binding_beyond_loopback_is_refused_without_the_explicit_setting(
    models_dir: Path,
) -> None:
    with pytest.raises(ConfigurationError, match=r"ops\.host.*allow_non_loopback"):
        load_settings(None, ops={"host": "0.0.0.0"})

    allowed = load_settings(None, ops={"host": "0.0.0.0", "allow_non_loopback": True})
    assert allowed.ops.host == "0.0.0.0"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_addresses_need_no_setting(host: str) -> None:
    assert load_settings(None, ops={"host": host}).ops.host == host


def test_a_host_name_that_merely_starts_with_127_is_not_loopback() -> None:
    with pytest.raises(ConfigurationError, match=r"ops\.host"):
        load_settings(None, ops={"host": "127.attacker.example"})


# -- backups: retention, status, rollback -------------------------------------------------------


async def install_versions(stack: OpsStack, model_file: Any, count: int) -> list[Path]:
    """Install versions 1.0, 1.1, ... in turn; the model files, in that order."""
    files = [model_file(f"v{n}.onnx", seed=100 + n, version=f"1.{n}") for n in range(count)]
    for candidate in files:
        assert await stack.brain.reload_models(candidate)
    return files


async def test_retention_keeps_exactly_n_backups_and_rollback_restores_any(
    models_dir: Path, model_file: Any
) -> None:
    settings = ops_settings(models_dir, models={"backup_retention": 3})
    async with running_ops(settings, clock=TickingClock()) as stack:
        installed = await install_versions(stack, model_file, 5)

        backups = stack.models.backups()
        assert [p.name for p in backups] == [  # newest first, one per install, 1 s apart
            f"{SLOT}_20250108_143027.onnx",
            f"{SLOT}_20250108_143026.onnx",
            f"{SLOT}_20250108_143025.onnx",
        ]
        assert sorted(p.name for p in (models_dir / "backup").iterdir()) == sorted(
            p.name for p in backups
        )
        _, status = await stack.get("/status")
        assert status["models"][SLOT]["backups"] == [p.name for p in backups]
        # Kept: the three models that served before the current one, newest first.
        assert [sha(p) for p in backups] == [sha(path) for path in installed[3:0:-1]]

        restorable = {backup.name: sha(backup) for backup in backups}
        for name in reversed(list(restorable)):  # oldest first: each still exists at its turn
            result = await stack.models.rollback(backup=name)
            assert result.ok, result.reason
            assert stack.brain.snapshot.models[SLOT].sha256 == restorable[name]
            assert sha(models_dir / f"{SLOT}.onnx") == restorable[name]
            assert len(stack.models.backups()) == 3


async def test_retention_keeps_the_newest_backups_when_installs_share_a_second(
    models_dir: Path, model_file: Any
) -> None:
    settings = ops_settings(models_dir, models={"backup_retention": 3})
    async with running_ops(settings, clock=TickingClock(step=timedelta(0))) as stack:
        installed = await install_versions(stack, model_file, 5)

        kept = [sha(p) for p in stack.models.backups()]

        assert kept == [sha(path) for path in installed[3:0:-1]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin_stack(models_dir: Path, model_file: Any) -> AsyncIterator[OpsStack]:
    settings = ops_settings(models_dir, ops={"admin_token": ADMIN_TOKEN})
    async with running_ops(settings) as stack:
        await install_versions(stack, model_file, 2)  # serving 1.1; backups of 1.0, embedded
        yield stack


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token"),
        {"Authorization": ADMIN_TOKEN},  # the token without its scheme
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_admin_rollback_refuses_a_missing_or_wrong_token(
    admin_stack: OpsStack, headers: dict[str, str]
) -> None:
    status, body = await admin_stack.post("/admin/rollback", headers=headers)

    assert status == 401
    assert "token" in body["error"]
    assert admin_stack.serving() == "1.1"


async def test_admin_rollback_with_the_token_restores_the_previous_backup(
    admin_stack: OpsStack,
) -> None:
    status, body = await admin_stack.post("/admin/rollback", headers=bearer(ADMIN_TOKEN))

    assert status == 200
    assert body["ok"] is True
    assert body["versions"] == {SLOT: "1.0"}
    assert admin_stack.serving() == "1.0"
    _, report = await admin_stack.get("/status")
    assert report["models"][SLOT]["provenance"]["source"] == "rollback"


async def test_admin_rollback_to_a_named_backup(admin_stack: OpsStack) -> None:
    oldest = admin_stack.models.backups()[-1]  # the embedded model's

    status, body = await admin_stack.post(
        "/admin/rollback",
        body=f'{{"to": "{oldest.name}"}}'.encode(),
        headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"},
    )

    assert status == 200, body
    assert body["versions"] == {SLOT: EMBEDDED_VERSION}
    assert admin_stack.serving() == EMBEDDED_VERSION


async def test_admin_rollback_to_an_unknown_backup_is_a_conflict(admin_stack: OpsStack) -> None:
    status, body = await admin_stack.post(
        "/admin/rollback", body=b'{"to": "no_such_backup.onnx"}', headers=bearer(ADMIN_TOKEN)
    )

    assert status == 409
    assert "no_such_backup.onnx" in body["reason"]
    assert admin_stack.serving() == "1.1"


async def test_admin_rollback_with_a_json_body_that_is_not_an_object_is_400(
    admin_stack: OpsStack,
) -> None:
    status, _ = await admin_stack.post(
        "/admin/rollback", body=b'["unified_brain"]', headers=bearer(ADMIN_TOKEN)
    )

    assert status == 400


async def test_admin_rollback_is_off_without_a_token(stack: OpsStack) -> None:
    status, _ = await stack.post("/admin/rollback", headers=bearer(""))

    assert status == 404
    assert stack.serving() == EMBEDDED_VERSION


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"slot": "nope"}', "unknown slot 'nope'"),
        (b'{"slot": ["x"]}', "slot"),
        (b'{"slot": 7}', "slot"),
        (b'{"to": {"a": 1}}', "to"),
        (b'{"to": "../../etc/passwd"}', "a backup file name"),
        (b'{"to": "sub/dir.onnx"}', "a backup file name"),
        (b'{"slots": "typo"}', "slots"),
        (b"[" * 20_000 + b"]" * 20_000, "JSON"),
        (b"\xff\xfe not utf-8", "JSON"),
    ],
    ids=["unknown-slot", "slot-list", "slot-int", "to-object", "to-escape", "to-folder",
         "unknown-key", "deep", "not-utf8"],
)  # fmt: skip
async def test_admin_rollback_with_a_bad_body_is_400_never_500(
    admin_stack: OpsStack, body: bytes, reason: str
) -> None:
    status, answer = await admin_stack.post(
        "/admin/rollback", body=body, headers=bearer(ADMIN_TOKEN)
    )

    assert status == 400, answer
    assert reason in answer["error"]
    assert admin_stack.serving() == "1.1"
