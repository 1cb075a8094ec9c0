"""What the sync remembers across cycles and restarts, and when and how often it runs.

Provenance and state survive restarts and corruption, a cycle is skipped when disabled or too
soon, one sync runs at a time, and the background loop paces them. ``tests/sync_host.py`` builds
the service graph.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from app.install.lock import DirectoryLock
from tests.artifacts import model_artifact, model_bytes, sha256_hex
from tests.fakes.github import DOWNLOAD_ARTIFACT, LIST_RUNS
from tests.sync_host import SLOT, backups, fake_settings, good_run

# -- memory across cycles and restarts -----------------------------------------------------------


async def test_provenance_of_the_installed_model_is_recorded(fake, host):
    run = fake.add_run(head_sha="a" * 40, run_attempt=2)
    artifact = fake.add_artifact(run, "trained-model", model_artifact("v7"))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    provenance = host.provenance()
    assert provenance | {"installed_at": None} == {
        "slot": SLOT,
        "path": str(host.models_dir / "unified_brain.onnx"),
        "sha256": sha256_hex(model_bytes("v7")),
        "version": "v7",
        "source": "github",
        "run_id": run.id,
        "run_attempt": 2,
        "artifact_id": artifact.id,
        "artifact_name": "trained-model",
        "head_sha": "a" * 40,
        "branch": "main",
        "digest": artifact.digest,
        "installed_at": None,
    }
    assert host.artifact_record(artifact.id)["outcome"] == "installed"
    assert host.state_file()["last_sync"]["outcome"] == "installed"


async def test_after_a_restart_the_sync_is_up_to_date_without_a_download(fake, host, start_host):
    good_run(fake, "v2")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    downloads, download_requests = fake.blob.downloads, fake.requests[DOWNLOAD_ARTIFACT]
    counted = fake.counted_requests

    restarted = await start_host(host.settings)
    report = await restarted.sync.synchronize_models(force=True)

    assert report.outcome == "up_to_date", report
    assert restarted.serving() == {SLOT: "v2"}
    assert fake.blob.downloads == downloads
    assert fake.requests[DOWNLOAD_ARTIFACT] == download_requests
    assert fake.counted_requests == counted  # the ETags survived the restart too


@pytest.mark.parametrize("restart", [False, True], ids=["same host", "after a restart"])
async def test_a_corrupt_state_file_is_reported_and_rebuilt_without_a_reinstall(
    fake, host, start_host, logs, restart
):
    _, artifact = good_run(fake, "v2")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    state_path = host.models_dir / ".sync" / "state.json"
    state_path.write_bytes(b'{"artifacts": {"1": ')
    downloads, saved = fake.blob.downloads, backups(host)

    current = await start_host(host.settings) if restart else host
    report = await current.sync.synchronize_models(force=True)

    assert report.outcome == "up_to_date", report
    assert any("is corrupt" in line and "rebuilding it" in line for line in logs)
    assert current.artifact_record(artifact)["outcome"] == "installed"
    assert current.state_file()["last_sync"]["outcome"] == "up_to_date"
    assert list(state_path.parent.glob("state.json.corrupt-*"))
    assert fake.blob.downloads == downloads
    assert backups(current) == saved
    assert current.serving() == {SLOT: "v2"}


# -- when a cycle runs at all --------------------------------------------------------------------


async def test_without_a_token_sync_is_disabled_and_the_inbox_still_works(
    fake, models_dir, start_host, logs
):
    host = await start_host(fake_settings(fake, models_dir, github={"token": ""}))
    inbox = await host.inbox()
    dropped = inbox.directory / "offline.zip"
    dropped.parent.mkdir(parents=True)
    dropped.write_bytes(model_artifact("offline"))
    os.utime(dropped, (time.time() - 60, time.time() - 60))

    report = await host.sync.synchronize_models(force=True)
    results = await inbox.process_pending()

    assert report.outcome == "disabled", report
    assert "⚠️ [CLOUD-SYNC] No GitHub token configured - cloud model sync will be disabled" in logs
    assert len(fake.recorded) == 0
    assert [r.outcome for r in results] == ["installed"]
    assert host.serving() == {SLOT: "offline"}


async def test_unforced_syncs_are_rate_limited_and_a_forced_one_runs(
    fake, models_dir, start_host, logs
):
    host = await start_host(fake_settings(fake, models_dir, cloud_sync={"min_interval_minutes": 5}))
    good_run(fake, "v2")

    first = await host.sync.synchronize_models()
    asked = fake.requests[LIST_RUNS]
    second = await host.sync.synchronize_models()
    asked_after_second = fake.requests[LIST_RUNS]
    forced = await host.sync.synchronize_models(force=True)

    assert first.outcome == "installed", first
    assert second.outcome == "skipped", second
    assert asked_after_second == asked
    assert any(line.startswith("🌐 [CLOUD-SYNC] Rate limiting - skipping sync (") for line in logs)
    assert forced.outcome == "up_to_date", forced
    assert fake.requests[LIST_RUNS] > asked
    starts = [line for line in logs if "Starting model synchronization" in line]
    assert len(starts) == 2


async def test_with_cloud_sync_disabled_nothing_is_asked(fake, models_dir, start_host, logs):
    host = await start_host(fake_settings(fake, models_dir, cloud_sync={"enabled": False}))
    good_run(fake, "v2")

    report = await host.sync.synchronize_models(force=True)
    await host.sync.run_forever(lambda seconds: pytest.fail("the loop must not start"))

    assert report.outcome == "disabled", report
    assert fake.recorded == []
    assert not [line for line in logs if "No GitHub token" in line]


# -- one sync at a time --------------------------------------------------------------------------


async def test_concurrent_syncs_both_complete_with_exactly_one_download(fake, host):
    good_run(fake, "v2")

    reports = await asyncio.gather(
        host.sync.synchronize_models(force=True), host.sync.synchronize_models(force=True)
    )

    assert sorted(r.outcome for r in reports) == ["installed", "up_to_date"]
    assert fake.blob.downloads == 1
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1
    assert host.serving() == {SLOT: "v2"}


async def test_a_sync_is_skipped_while_another_process_holds_the_sync_lock(fake, host):
    good_run(fake, "v2")
    # flock locks belong to an open file description: a second open in this process conflicts
    # exactly as another process's would.
    other = DirectoryLock(host.models_dir / ".sync" / "sync.lock")
    try:
        report = await host.sync.synchronize_models(force=True)
    finally:
        other.release()
    after = await host.sync.synchronize_models(force=True)

    assert report.outcome == "skipped", report
    assert "another process" in report.reason
    assert after.outcome == "installed", after


# -- the background loop -------------------------------------------------------------------------


async def test_the_loop_syncs_at_start_up_then_every_interval_until_stopped(fake, host):
    good_run(fake, "v2")
    naps: list[float] = []

    async def sleep(seconds: float) -> bool:
        naps.append(seconds)
        if len(naps) == 1:  # a newer model is trained while the loop sleeps
            good_run(fake, "v3")
        return len(naps) == 2

    await host.sync.run_forever(sleep)

    assert naps == [host.settings.cloud_sync.interval_minutes * 60] * 2
    assert host.serving() == {SLOT: "v3"}
    assert fake.blob.downloads == 2


async def test_without_a_sync_at_start_up_the_loop_waits_first(fake, models_dir, start_host):
    settings = fake_settings(fake, models_dir, cloud_sync={"sync_on_startup": False})
    host = await start_host(settings)
    good_run(fake, "v2")
    naps: list[float] = []

    async def stop_at_once(seconds: float) -> bool:
        naps.append(seconds)
        return True

    await host.sync.run_forever(stop_at_once)

    assert naps == [settings.cloud_sync.interval_minutes * 60]
    assert fake.recorded == []


# -- regressions: bugs these tests found, since fixed ------------------------------------------


async def test_an_unreadable_provenance_file_does_not_bring_back_an_older_model(fake, host):
    good_run(fake, "v1")
    good_run(fake, "v2")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    (host.models_dir / ".sync" / "installed" / f"{SLOT}.json").write_text("{torn")

    report = await host.sync.synchronize_models(force=True)

    assert (report.outcome, host.serving()) == ("up_to_date", {SLOT: "v2"}), report
    assert fake.blob.downloads == 1
