"""Which run and artifact a sync installs, and which it never touches.

The newest trusted run wins and no older one follows it; runs from forks, pull requests, other
branches or events, and artifacts under other names are ignored. ``tests/sync_host.py`` builds
the service graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tests.artifacts import model_artifact, model_bytes
from tests.fakes.github import DOWNLOAD_ARTIFACT, LIST_ARTIFACTS, LIST_RUNS
from tests.sync_host import EMBEDDED_VERSION, SLOT, backups, good_run


def in_order(lines: Sequence[str], fragments: Sequence[str]) -> list[int]:
    """Positions of lines containing each fragment, each after the previous; fails if absent."""
    positions: list[int] = []
    start = 0
    for fragment in fragments:
        found = next((i for i in range(start, len(lines)) if fragment in lines[i]), None)
        assert found is not None, f"no line with {fragment!r} after line {start}:\n" + "\n".join(
            lines
        )
        positions.append(found)
        start = found + 1
    return positions


# -- finding and installing the newest model -----------------------------------------------------


async def test_newest_eligible_run_across_pages_is_installed_with_the_seeds_log_lines(
    fake, host, logs
):
    good_run(fake, "v1")
    newest_eligible = fake.add_run()
    # Listed newest first, two per page: the matching artifact is on the second page.
    wanted = fake.add_artifact(newest_eligible, "trained-model", model_artifact("v2"))
    fake.add_artifact(newest_eligible, "coverage-report", b"PK\x05\x06" + bytes(18))
    fake.add_artifact(newest_eligible, "test-logs", b"PK\x05\x06" + bytes(18))
    untrusted = fake.add_run(event="pull_request")
    fake.add_artifact(untrusted, "trained-model", model_artifact("from-a-pull-request"))
    good_run(fake, "other-branch", head_branch="develop")

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "v2"}
    assert report.artifact is not None
    assert report.artifact["id"] == wanted.id
    assert report.versions == {SLOT: "v2"}
    assert fake.requests[LIST_RUNS] >= 2  # pages were followed
    assert fake.requests[LIST_ARTIFACTS] == 2  # both pages of the chosen run's artifacts
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1
    assert fake.blob.downloads == 1
    installed = host.models_dir / "unified_brain.onnx"
    assert installed.read_bytes() == model_bytes("v2")
    assert len(backups(host)) == 1
    in_order(
        logs,
        [
            "🌐 [CLOUD-SYNC] Starting model synchronization...",
            f"Downloading new model: trained-model from run {newest_eligible.id}",
            "Model extracted: ",
            "🔄 [CLOUD-SYNC] Triggering model hot-swap for:",
            "🔄 [MODEL-RELOAD] Starting model reload:",
            "💾 [MODEL-RELOAD] Backup created:",
            "✅ [MODEL-RELOAD] Model reloaded successfully",
            "✅ [CLOUD-SYNC] Model hot-swap completed successfully",
        ],
    )
    metrics = host.monitoring.render()[0].decode()
    assert 'model_sync_cycles_total{outcome="installed"} 1.0' in metrics


async def test_an_idle_poll_is_answered_304_costs_no_rate_limit_and_downloads_nothing(fake, host):
    good_run(fake, "v1")
    good_run(fake, "v2")
    # Newer than the installed run, so every poll looks at them again: one has no model
    # artifact, the other is from a pull request. With two runs a page, v2 is on page 2.
    fake.add_artifact(fake.add_run(), "coverage-report", b"PK\x05\x06" + bytes(18))
    fake.add_run(event="pull_request")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    counted, recorded, downloads = fake.counted_requests, len(fake.recorded), fake.blob.downloads
    asked = fake.requests.copy()

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "up_to_date", report
    polled = fake.recorded[recorded:]
    # The run without a model artifact was judged once: its artifact list is final.
    assert [r.endpoint for r in polled] == [LIST_RUNS, LIST_RUNS]
    assert all("If-None-Match" in r.headers for r in polled)
    assert fake.counted_requests == counted  # every answer was a 304
    assert fake.requests[DOWNLOAD_ARTIFACT] == asked[DOWNLOAD_ARTIFACT]
    assert fake.blob.downloads == downloads
    assert host.serving() == {SLOT: "v2"}


async def test_newest_run_is_chosen_and_an_older_one_never_replaces_it(fake, host):
    oldest, _ = good_run(fake, "v1")
    good_run(fake, "v2")
    newest, newest_artifact = good_run(fake, "v3")

    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    assert host.serving() == {SLOT: "v3"}
    assert fake.blob.downloads == 1  # the older runs were never fetched

    # A new artifact appears on an older run: by polling, and by a webhook delivery for it.
    late = fake.add_artifact(oldest, "trained-model-late", model_artifact("v1-late"))
    polled = await host.sync.synchronize_models(force=True)
    run = await (await host.github()).get_run(oldest.id)
    pushed = await host.sync.synchronize_run(run)

    assert polled.outcome == "up_to_date", polled
    assert pushed.outcome == "up_to_date", pushed
    assert fake.blob.downloads == 1
    assert host.serving() == {SLOT: "v3"}
    assert host.provenance()["artifact_id"] == newest_artifact
    assert str(late.id) not in host.state_file()["artifacts"]
    assert newest.id > oldest.id


async def test_of_two_matching_artifacts_of_a_run_the_later_upload_is_installed(fake, host):
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", model_artifact("first-upload"))
    later = fake.add_artifact(run, "trained-model-final", model_artifact("later-upload"))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "later-upload"}
    assert host.provenance()["artifact_id"] == later.id
    assert fake.blob.downloads == 1


# -- what is never installed ---------------------------------------------------------------------


IGNORED_RUNS: dict[str, dict[str, Any]] = {
    "failed run": {"conclusion": "failure"},
    "other branch": {"head_branch": "develop"},
    "pull request": {"event": "pull_request"},
    "pull request target": {"event": "pull_request_target"},
    "fork": {"head_repository": "mallory/trading-models"},
    "unlisted event": {"event": "repository_dispatch"},
}


@pytest.mark.parametrize("run_fields", IGNORED_RUNS.values(), ids=IGNORED_RUNS.keys())
async def test_untrusted_newer_runs_are_ignored(fake, host, run_fields):
    _, trusted = good_run(fake, "trusted")
    good_run(fake, "untrusted", **run_fields)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "trusted"}
    assert host.provenance()["artifact_id"] == trusted
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1
    assert fake.blob.downloads == 1


async def test_an_artifact_whose_name_does_not_match_is_ignored(fake, host):
    _, trusted = good_run(fake, "trusted")
    newer = fake.add_run()
    fake.add_artifact(newer, "coverage-report", model_artifact("not-a-model-artifact"))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "trusted"}
    assert host.provenance()["artifact_id"] == trusted
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1


async def test_a_run_with_nothing_to_install_is_not_listed_again_even_after_a_restart(
    fake, host, start_host
):
    fake.add_artifact(fake.add_run(), "coverage-report", model_artifact("not-a-model-artifact"))
    assert (await host.sync.synchronize_models(force=True)).outcome == "up_to_date"
    assert fake.requests[LIST_ARTIFACTS] == 1

    restarted = await start_host(host.settings)
    report = await restarted.sync.synchronize_models(force=True)

    assert report.outcome == "up_to_date", report
    assert fake.requests[LIST_ARTIFACTS] == 1


async def test_an_artifact_listed_as_expired_is_not_downloaded(fake, host):
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", model_artifact("gone"), expired=True)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "up_to_date", report
    assert fake.requests[DOWNLOAD_ARTIFACT] == 0
    assert fake.blob.downloads == 0
    assert host.serving() == {SLOT: EMBEDDED_VERSION}


# -- the webhook path ----------------------------------------------------------------------------


async def test_synchronize_run_goes_straight_to_the_run(fake, host):
    run, _ = good_run(fake, "v2")
    delivered = await (await host.github()).get_run(run.id)

    report = await host.sync.synchronize_run(delivered)

    assert report.outcome == "installed", report
    assert fake.requests[LIST_RUNS] == 0
    assert host.serving() == {SLOT: "v2"}


async def test_synchronize_run_refuses_an_untrusted_run_without_downloading(fake, host):
    run, _ = good_run(fake, "from-a-fork", head_repository="mallory/trading-models")
    delivered = await (await host.github()).get_run(run.id)

    report = await host.sync.synchronize_run(delivered)

    assert report.outcome == "skipped", report
    assert "fork" in report.reason
    assert fake.requests[LIST_ARTIFACTS] == 0
    assert fake.blob.downloads == 0


# -- regressions: bugs these tests found, since fixed ------------------------------------------


async def test_a_newer_run_holding_the_serving_model_is_never_followed_by_an_older_one(fake, host):
    good_run(fake, "v1")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    _, between = good_run(fake, "v2")
    good_run(fake, "v1")  # retrained to the very same bytes as the serving model

    first = await host.sync.synchronize_models(force=True)
    second = await host.sync.synchronize_models(force=True)

    assert first.outcome == "up_to_date", first
    assert (second.outcome, host.serving()) == ("up_to_date", {SLOT: "v1"}), second
    assert str(between) not in host.state_file()["artifacts"]
    assert fake.blob.downloads == 2
