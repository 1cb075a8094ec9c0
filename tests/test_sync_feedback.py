"""Sync says what it did and when it will try again (issue 7, item 8).

Only a completed cycle counts against ``min_interval_minutes``: a failed one (a bad token, a
network fault) must not make the next one "skipped: rate limiting", neither right after the
token is fixed nor after a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.fakes.github import LIST_RUNS
from tests.sync_host import SLOT, fake_settings, good_run


def throttled(fake, models_dir):
    return fake_settings(fake, models_dir, cloud_sync={"min_interval_minutes": 5})


async def test_a_failed_sync_does_not_hold_back_the_next_one(fake, models_dir, start_host, logs):
    host = await start_host(throttled(fake, models_dir))
    good_run(fake, "v2")
    fake.revoke_token()

    failed = await host.sync.synchronize_models()
    fake._token_revoked = False  # the user fixes the token
    fixed = await host.sync.synchronize_models()

    assert failed.outcome == "failed", failed
    assert fixed.outcome == "installed", fixed
    assert host.serving() == {SLOT: "v2"}
    assert not any("skipping sync" in line for line in logs)


async def test_a_restarted_host_does_not_skip_its_start_up_sync_after_a_failure(
    fake, models_dir, start_host
):
    first = await start_host(throttled(fake, models_dir))
    good_run(fake, "v2")
    fake.fail_next(LIST_RUNS, times=10)
    assert (await first.sync.synchronize_models()).outcome == "failed"
    fake._faults.clear()

    restarted = await start_host(throttled(fake, models_dir))
    report = await restarted.sync.synchronize_models()

    assert report.outcome == "installed", report


async def test_a_completed_sync_holds_back_an_unforced_one_and_says_until_when(
    fake, models_dir, start_host, logs
):
    host = await start_host(throttled(fake, models_dir))
    good_run(fake, "v2")

    done = await host.sync.synchronize_models()
    skipped = await host.sync.synchronize_models()

    assert done.outcome == "installed"
    assert done.retry_at is not None
    assert timedelta(minutes=4) < done.retry_at - datetime.now(UTC) <= timedelta(minutes=5)
    assert skipped.outcome == "skipped"
    assert skipped.retry_at == done.retry_at
    assert f"{done.retry_at:%H:%M:%S} UTC" in skipped.reason
    assert skipped.to_json()["retry_at"] == done.retry_at.isoformat()
    summary = [line for line in logs if "Synchronization installed" in line]
    assert len(summary) == 1
    assert f"next unforced sync from {done.retry_at:%H:%M:%S} UTC" in summary[0]


async def test_a_failure_says_it_counts_for_nothing_and_a_rate_limit_says_when(
    fake, models_dir, start_host, logs
):
    host = await start_host(throttled(fake, models_dir))
    good_run(fake, "v2")
    fake.fail_next(LIST_RUNS, times=10)

    failed = await host.sync.synchronize_models()
    fake._faults.clear()
    fake.exhaust_rate_limit(reset_in=1200)
    limited = await host.sync.synchronize_models()

    assert failed.outcome == "failed"
    assert failed.retry_at is None
    [line] = [line for line in logs if "Synchronization failed" in line and "502" in line]
    assert "the next cycle tries again" in line
    assert limited.outcome == "failed"
    assert limited.retry_at is not None
    assert timedelta(minutes=19) < limited.retry_at - datetime.now(UTC) <= timedelta(minutes=20)
    assert any(f"not before {limited.retry_at:%H:%M:%S} UTC" in line for line in logs)


async def test_the_loop_waits_out_a_rate_limit_longer_than_its_interval(
    fake, models_dir, start_host, logs
):
    settings = fake_settings(
        fake, models_dir, cloud_sync={"interval_minutes": 5, "min_interval_minutes": 0}
    )
    host = await start_host(settings)
    fake.exhaust_rate_limit(reset_in=1800)
    naps: list[float] = []

    async def sleep(seconds: float) -> bool:
        naps.append(seconds)
        return True

    await host.sync.run_forever(sleep)

    assert 29 * 60 < naps[0] <= 30 * 60
    assert any("Next sync at" in line for line in logs)
