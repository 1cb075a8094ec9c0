"""Fetching an artifact: expiry, digest and size checks, retries, rate limits, the token.

The network misbehaves, GitHub limits the rate or refuses the token, and the token never leaks
into a log line, a file or an error. ``tests/sync_host.py`` builds the service graph.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from app.services.github_types import Artifact
from app.services.sync import SyncReport
from tests.artifacts import model_artifact
from tests.fakes.github import DOWNLOAD_ARTIFACT, LIST_ARTIFACTS, LIST_RUNS, FakeGitHub
from tests.sync_host import EMBEDDED_VERSION, SLOT, fake_settings, good_run, tree

# -- the artifact is checked before and while it is fetched --------------------------------------


class _ExpireWhenDownloadStarts:
    """A progress display whose opening expires the artifact: it was listed alive, now 410."""

    def __init__(self, fake: FakeGitHub) -> None:
        self._fake = fake

    def __call__(self, artifact: Artifact) -> _ExpireWhenDownloadStarts:
        self._fake.expire(self._fake.artifacts[artifact.id])
        return self

    def update_to(self, received: int) -> None:
        pass

    def close(self) -> None:
        pass


async def test_an_artifact_that_expires_before_its_download_is_recorded_expired(fake, host):
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", model_artifact("gone"))
    host.sync.progress = _ExpireWhenDownloadStarts(fake)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "skipped", report
    assert "410" in report.reason
    assert host.artifact_record(artifact.id)["outcome"] == "expired"
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1  # a 410 is final: not retried
    assert fake.blob.downloads == 0
    assert host.serving() == {SLOT: EMBEDDED_VERSION}


async def test_a_digest_mismatch_is_rejected_and_not_downloaded_again(fake, host, logs):
    run = fake.add_run()
    artifact = fake.add_artifact(
        run, "trained-model", model_artifact("tampered"), digest="sha256:" + "0" * 64
    )
    before = tree(host.models_dir)

    report = await host.sync.synchronize_models(force=True)
    again = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert "SHA-256" in report.reason
    assert again.outcome == "up_to_date", again
    assert fake.blob.downloads == 1
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(host.models_dir) == before
    assert list((host.models_dir / ".sync" / "downloads").iterdir()) == []
    assert any("⚠️ [CLOUD-SYNC] Artifact trained-model" in line for line in logs)


async def test_an_artifact_over_the_size_limit_is_refused_before_downloading(
    fake, models_dir, start_host
):
    host = await start_host(fake_settings(fake, models_dir, models={"max_artifact_mb": 0.0001}))
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", model_artifact("big"))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert "limit" in report.reason
    assert fake.requests[DOWNLOAD_ARTIFACT] == 0
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"


# -- the network misbehaves ----------------------------------------------------------------------


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_a_download_cut_mid_body_is_retried_with_a_fresh_url_and_no_token(
    fake, host, declare_length
):
    fake.blob.declare_length = declare_length
    run = fake.add_run()
    content = model_artifact("v2")
    fake.add_artifact(run, "trained-model", content)
    fake.drop_next_download(after_bytes=len(content) // 2)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "v2"}
    assert fake.requests[DOWNLOAD_ARTIFACT] == 2  # a fresh signed URL for the second try
    first, second = fake.blob_requests
    assert first.path != second.path
    assert not fake.blob.authorization_seen
    assert list((host.models_dir / ".sync" / "downloads").iterdir()) == []


async def test_server_errors_are_retried_then_the_sync_succeeds(fake, host):
    good_run(fake, "v2")
    fake.fail_next(LIST_RUNS, times=2, status=502)
    fake.fail_next(LIST_ARTIFACTS, times=1, status=503)
    fake.fail_next(DOWNLOAD_ARTIFACT, times=2, status=500)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert fake.requests[LIST_RUNS] == 3
    assert fake.requests[LIST_ARTIFACTS] == 2
    assert fake.requests[DOWNLOAD_ARTIFACT] == 3
    assert fake.blob.downloads == 1
    assert host.serving() == {SLOT: "v2"}


async def test_a_secondary_rate_limit_is_waited_out_then_the_sync_succeeds(fake, host, logs):
    good_run(fake, "v2")
    fake.limit_next(LIST_RUNS, status=429, retry_after=1)

    started = time.monotonic()
    report = await host.sync.synchronize_models(force=True)
    elapsed = time.monotonic() - started

    assert report.outcome == "installed", report
    assert elapsed >= 0.95
    assert fake.requests[LIST_RUNS] == 2
    assert any("retry 1/2 in 1.0s" in line for line in logs)


async def test_an_exhausted_rate_limit_is_waited_out_until_its_reset(fake, host):
    good_run(fake, "v2")
    fake.exhaust_rate_limit(reset_in=1)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert fake.requests[LIST_RUNS] >= 2
    assert host.serving() == {SLOT: "v2"}


async def test_a_rate_limit_longer_than_max_delay_fails_the_cycle_without_waiting(fake, host):
    good_run(fake, "v2")
    fake.limit_next(LIST_RUNS, status=403, retry_after=3600)

    started = time.monotonic()
    report = await host.sync.synchronize_models(force=True)

    assert time.monotonic() - started < 1
    assert report.outcome == "failed", report
    assert "rate limited" in report.reason
    assert fake.requests[LIST_RUNS] == 1
    assert fake.blob.downloads == 0


async def test_without_resilience_a_server_error_fails_the_cycle_and_the_next_one_installs(
    fake, models_dir, start_host
):
    host = await start_host(fake_settings(fake, models_dir), bare=True)
    good_run(fake, "v2")
    fake.fail_next(LIST_RUNS, times=1, status=502)

    failed = await host.sync.synchronize_models(force=True)
    recovered = await host.sync.synchronize_models(force=True)

    assert failed.outcome == "failed", failed
    assert "502" in failed.reason
    assert recovered.outcome == "installed", recovered
    assert fake.requests[LIST_RUNS] == 2
    assert host.serving() == {SLOT: "v2"}


async def test_after_repeated_failures_the_circuit_opens_and_calls_fail_fast(
    fake, models_dir, start_host
):
    settings = fake_settings(fake, models_dir, resilience={"breaker_failure_threshold": 2})
    host = await start_host(settings)
    good_run(fake, "v2")
    fake.fail_next(LIST_RUNS, times=6, status=502)  # two cycles of three attempts each

    failed = [await host.sync.synchronize_models(force=True) for _ in range(2)]
    fast = await host.sync.synchronize_models(force=True)

    assert [r.outcome for r in failed] == ["failed", "failed"]
    assert fast.outcome == "failed", fast
    assert "circuit for github.list_runs is open" in fast.reason
    assert fast.retry_at is not None  # when the circuit lets a trial call through
    assert fake.requests[LIST_RUNS] == 6  # nothing was sent while the circuit was open
    assert fake.blob.downloads == 0


# -- the token -----------------------------------------------------------------------------------


async def test_a_refused_token_fails_clearly_and_is_not_retried(fake, host, logs):
    good_run(fake, "v2")
    fake.revoke_token()

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "failed", report
    assert "401" in report.reason
    assert "token was refused" in report.reason
    assert fake.requests[LIST_RUNS] == 1
    assert any("❌ [CLOUD-SYNC] Synchronization failed" in line for line in logs)
    assert host.state_file()["last_sync"]["outcome"] == "failed"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}


async def test_the_token_appears_in_no_log_line_file_or_error(fake, host, logs, models_dir):
    good_run(fake, "v2")
    reports: list[SyncReport] = [await host.sync.synchronize_models(force=True)]
    good_run(fake, "v3")
    fake.fail_next(LIST_RUNS, times=3, status=500)  # every attempt fails
    reports.append(await host.sync.synchronize_models(force=True))
    fake.revoke_token()
    reports.append(await host.sync.synchronize_models(force=True))

    assert [r.outcome for r in reports] == ["installed", "failed", "failed"]
    assert len(logs) > 10
    token = fake.token
    assert not [line for line in logs if token in line]
    for report in reports:
        assert token not in json.dumps(report.to_json())
    files = [path for path in models_dir.rglob("*") if path.is_file()]
    assert any(path.name == "state.json" for path in files)
    assert not [path for path in files if token.encode() in path.read_bytes()]


# -- regressions: bugs these tests found, since fixed ------------------------------------------


async def test_an_expired_signed_url_is_retried_with_a_fresh_one(fake, host):
    good_run(fake, "v2")
    fake.blob.url_ttl = -1  # every URL handed out is already expired ...

    async def renew_once_refused() -> None:  # ... until the blob host has refused one
        while not fake.blob.requests:
            await asyncio.sleep(0.001)
        fake.blob.url_ttl = 60

    renewing = asyncio.create_task(renew_once_refused())
    report = await host.sync.synchronize_models(force=True)
    renewing.cancel()

    assert fake.blob_requests[0].status == 403
    assert report.outcome == "installed", report
    assert fake.requests[DOWNLOAD_ARTIFACT] == 2
