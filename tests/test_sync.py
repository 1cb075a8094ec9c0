"""End to end: the sync service graph against a fake GitHub on 127.0.0.1 and its blob host.

Each test assembles the graph as the host does (``Core`` with a real aiohttp session, a started
brain, the resilience and monitoring services) on a real models directory, and judges only what
can be observed: the model that decides, files on disk, the sync state, the requests the fake
received and the log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.brain.brain import TradingBrain
from app.brain.lock import DirectoryLock
from app.containers import Core, model_store, resilience_service, resolve, trading_brain
from app.services.github import GitHubActionsClient
from app.services.github_types import Artifact
from app.services.inbox import LocalInbox
from app.services.monitoring import ProductionMonitoringService
from app.services.state import StateStore
from app.services.sync import CloudModelSynchronizationService, SyncReport
from app.settings import Settings
from tests.artifacts import (
    hostile_artifact,
    model_artifact,
    model_bytes,
    model_members,
    sha256_hex,
    tripwire_pickle,
    zip_bytes,
)
from tests.conftest import make_settings
from tests.fakes.github import (
    DOWNLOAD_ARTIFACT,
    LIST_ARTIFACTS,
    LIST_RUNS,
    FakeGitHub,
    FakeRun,
)
from tests.onnx_models import decision_model, save
from tests.zips import entry, patch_header, write_zip

FEATURES = [0.1] * 16
EMBEDDED_VERSION = "embedded-1"
SLOT = "unified_brain"
MIB = 1 << 20


@dataclass
class Host:
    """One service graph over a models directory, assembled as the running bot does."""

    settings: Settings
    brain: TradingBrain
    core: Core
    sync: CloudModelSynchronizationService
    state: StateStore
    monitoring: ProductionMonitoringService

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    def serving(self) -> dict[str, str]:
        """The model versions that make a decision right now."""
        return dict(self.brain.decide(FEATURES).versions)

    def provenance(self, slot: str = SLOT) -> dict[str, Any]:
        path = self.models_dir / ".sync" / "installed" / f"{slot}.json"
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def state_file(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.models_dir / ".sync" / "state.json").read_text())
        return loaded

    def artifact_record(self, artifact_id: int) -> dict[str, Any]:
        record: dict[str, Any] = self.state_file()["artifacts"][str(artifact_id)]
        return record

    async def github(self) -> GitHubActionsClient:
        client: GitHubActionsClient = await resolve(self.core.github)
        return client

    async def inbox(self) -> LocalInbox:
        inbox: LocalInbox = await resolve(self.core.inbox)
        return inbox


HostFactory = Callable[..., Awaitable[Host]]


def fake_settings(fake: FakeGitHub, models_dir: Path, **sections: Any) -> Settings:
    """Settings pointing at the fake, with small limits and near-instant retries."""
    github = {"api_url": fake.api_url, "token": fake.token, "owner": fake.owner}
    github |= {"repository": fake.repository, "per_page": 2, **sections.pop("github", {})}
    cloud_sync = {"min_interval_minutes": 0, **sections.pop("cloud_sync", {})}
    resilience = {"max_retries": 2, "base_delay_seconds": 0.01, "max_delay_seconds": 2}
    resilience |= sections.pop("resilience", {})
    models = {"max_artifact_mb": 4, "max_uncompressed_mb": 16, **sections.pop("models", {})}
    return make_settings(
        models_dir,
        github=github,
        cloud_sync=cloud_sync,
        resilience=resilience,
        models=models,
        **sections,
    )


@pytest.fixture
async def start_host() -> AsyncIterator[HostFactory]:
    """A factory of service graphs; each has its own session and brain, closed at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(settings: Settings, *, bare: bool = False) -> Host:
            """``bare``: without the optional resilience and monitoring services."""
            session = await stack.enter_async_context(aiohttp.ClientSession())
            brain = trading_brain(settings, model_store(settings))
            await brain.start()
            monitoring = ProductionMonitoringService()
            core = Core(config=settings, http=session, brain=brain)
            if not bare:
                core.resilience.override(resilience_service(settings, monitoring))
                core.monitoring.override(monitoring)
            core.check_dependencies()
            sync = await resolve(core.sync)
            state = await resolve(core.state)
            return Host(settings, brain, core, sync, state, monitoring)

        yield start


@pytest.fixture
async def host(fake: FakeGitHub, models_dir: Path, start_host: HostFactory) -> Host:
    return await start_host(fake_settings(fake, models_dir))


def good_run(fake: FakeGitHub, version: str, **run: Any) -> tuple[FakeRun, int]:
    """A successful push run on main with one good model artifact; (run, artifact id)."""
    created = fake.add_run(**run)
    artifact = fake.add_artifact(created, "trained-model", model_artifact(version))
    return created, artifact.id


def tree(root: Path, *, skip: str | None = ".sync") -> dict[str, str]:
    """Every file under ``root`` (but ``skip``) with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(root)): sha256_hex(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and (skip is None or skip not in path.relative_to(root).parts)
    }


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


def backups(host: Host) -> list[str]:
    folder = host.models_dir / "backup"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


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


async def test_a_metadata_checksum_mismatch_is_rejected(fake, host):
    run = fake.add_run()
    content = model_artifact("lying", declared_sha256="1" * 64)
    artifact = fake.add_artifact(run, "trained-model", content)
    before = tree(host.models_dir)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert "metadata.json declares SHA-256" in report.reason
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(host.models_dir) == before


async def test_a_model_the_brain_refuses_is_rejected_and_not_downloaded_again(fake, host):
    run = fake.add_run()
    narrow = model_bytes("narrow", n_features=8)  # the brain decides from 16 features
    artifact = fake.add_artifact(run, "trained-model", model_artifact("narrow", model=narrow))
    before = tree(host.models_dir)

    report = await host.sync.synchronize_models(force=True)
    again = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert again.outcome == "up_to_date", again
    assert fake.blob.downloads == 1
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(host.models_dir) == before


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


# -- hostile zips through the whole pipeline -----------------------------------------------------


def _absolute(tmp_path: Path) -> list[Any]:
    return [(str(tmp_path / "escaped.onnx"), model_bytes("evil"))]


def _dot_dot(tmp_path: Path) -> list[Any]:
    # From models/.sync/work/<id>/ four levels up is tmp_path.
    return [("../../../../escaped.onnx", model_bytes("evil"))]


def _symlink(tmp_path: Path) -> list[Any]:
    link = entry("unified_brain.onnx", mode=stat.S_IFLNK | 0o777)
    return [(link, str(tmp_path / "escaped.onnx").encode())]


def _duplicate(tmp_path: Path) -> list[Any]:
    return [("unified_brain.onnx", model_bytes("one")), ("unified_brain.onnx", model_bytes("two"))]


def _oversized(tmp_path: Path) -> list[Any]:
    noise = os.urandom(3 * MIB)  # incompressible: the ratio stays near 1, the total is over
    return [*model_members("v2"), ("noise.pkl", noise)]


def _high_ratio(tmp_path: Path) -> list[Any]:
    # Inflates 1000:1; it is refused on the ratio before it could reach the total limit.
    return [*model_members("v2"), ("bomb.pkl", bytes(3 * MIB // 2))]


def _lying_header(tmp_path: Path) -> bytes:
    path = write_zip(tmp_path / "lying.zip", [*model_members("v2"), ("bomb.pkl", bytes(MIB))])
    patch_header(path, "bomb.pkl", file_size=1000)  # claims 1000 bytes, inflates to 1 MiB
    data = path.read_bytes()
    path.unlink()
    return data


HOSTILE: dict[str, tuple[Callable[[Path], Any], str]] = {
    "absolute path": (_absolute, "absolute path"),
    "dot-dot": (_dot_dot, "'..' in its path"),
    "symlink": (_symlink, "it is a symlink"),
    "duplicate names": (_duplicate, "collides"),
    "oversized": (_oversized, "inflates to more than the limit"),
    "high-ratio bomb": (_high_ratio, "compression ratio"),
    "lying header": (_lying_header, "past its declared size"),
}


@pytest.mark.parametrize(("build", "rule"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_zips_are_rejected_and_write_nothing_outside_staging(
    fake, models_dir, start_host, tmp_path, build, rule
):
    host = await start_host(fake_settings(fake, models_dir, models={"max_uncompressed_mb": 2}))
    built = build(tmp_path)
    content = built if isinstance(built, bytes) else hostile_artifact(tmp_path, built)
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", content)
    outside = tree(tmp_path, skip="models")
    inside = tree(models_dir)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert rule in report.reason
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert tree(tmp_path, skip="models") == outside
    assert not (tmp_path / "escaped.onnx").exists()
    assert tree(models_dir) == inside
    sync_dir = models_dir / ".sync"
    assert [p for p in (sync_dir / "work").rglob("*") if p.is_file()] == []
    assert list((sync_dir / "downloads").iterdir()) == []


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


# -- memory across cycles and restarts -----------------------------------------------------------


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
    assert fake.requests[LIST_RUNS] == 6  # nothing was sent while the circuit was open
    assert fake.blob.downloads == 0


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
    assert "🌐 [CLOUD-SYNC] Rate limiting - skipping sync" in logs
    assert forced.outcome == "up_to_date", forced
    assert fake.requests[LIST_RUNS] > asked
    starts = [line for line in logs if "Starting model synchronization" in line]
    assert len(starts) == 2


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


# -- what an artifact may hold -------------------------------------------------------------------


@pytest.fixture
def two_slot_models(models_dir: Path) -> Path:
    save(decision_model(seed=5, version="risk-0"), models_dir / "risk" / "risk_model.onnx")
    return models_dir


def two_slot_settings(fake: FakeGitHub, models_dir: Path) -> Settings:
    slots = {SLOT: {"path": "unified_brain.onnx"}, "risk": {"path": "risk/risk_model.onnx"}}
    return fake_settings(fake, models_dir, brain={"slots": slots})


def two_slot_artifact(*, risk_model: bytes) -> bytes:
    return zip_bytes(
        [
            *model_members("brain-2", folder="brain", slot=SLOT),
            *model_members(
                "risk-2", folder="risk", name="risk_model.onnx", slot="risk", model=risk_model
            ),
        ]
    )


async def test_a_multi_slot_artifact_installs_every_slot(fake, two_slot_models, start_host):
    host = await start_host(two_slot_settings(fake, two_slot_models))
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", two_slot_artifact(risk_model=model_bytes("risk-2")))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert host.serving() == {SLOT: "brain-2", "risk": "risk-2"}
    assert host.provenance("risk")["run_id"] == run.id
    assert (two_slot_models / "risk" / "risk_model.onnx").read_bytes() == model_bytes("risk-2")


async def test_a_multi_slot_artifact_with_one_bad_model_installs_neither(
    fake, two_slot_models, start_host
):
    host = await start_host(two_slot_settings(fake, two_slot_models))
    run = fake.add_run()
    broken = model_bytes("risk-2", nan_output=True)  # loads, but its output is not finite
    artifact = fake.add_artifact(run, "trained-model", two_slot_artifact(risk_model=broken))
    before = tree(two_slot_models)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert host.serving() == {SLOT: EMBEDDED_VERSION, "risk": "risk-0"}
    assert tree(two_slot_models) == before
    assert host.artifact_record(artifact.id)["outcome"] == "rejected"


async def test_a_pickle_is_stored_beside_the_model_and_never_unpickled(fake, host, tmp_path):
    proof = tmp_path / "the-tripwire-works"
    pickle.loads(tripwire_pickle(proof))  # our own bytes: proves the trap works
    assert proof.exists()  # loading such a pickle does leave its marker
    marker = tmp_path / "unpickled"
    scaler = tripwire_pickle(marker)
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", model_artifact("v2", extra={"scaler.pkl": scaler}))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "installed", report
    assert (host.models_dir / "scaler.pkl").read_bytes() == scaler
    assert not marker.exists()


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


async def test_with_cloud_sync_disabled_nothing_is_asked(fake, models_dir, start_host, logs):
    host = await start_host(fake_settings(fake, models_dir, cloud_sync={"enabled": False}))
    good_run(fake, "v2")

    report = await host.sync.synchronize_models(force=True)
    await host.sync.run_forever(lambda seconds: pytest.fail("the loop must not start"))

    assert report.outcome == "disabled", report
    assert fake.recorded == []
    assert not [line for line in logs if "No GitHub token" in line]


# -- known bugs ----------------------------------------------------------------------------------


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


@pytest.mark.parametrize("build", [_oversized, _high_ratio], ids=["oversized", "high-ratio"])
async def test_a_zip_over_a_limit_is_counted_as_too_large(
    fake, models_dir, start_host, tmp_path, build
):
    host = await start_host(fake_settings(fake, models_dir, models={"max_uncompressed_mb": 2}))
    fake.add_artifact(fake.add_run(), "trained-model", hostile_artifact(tmp_path, build(tmp_path)))

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    metrics = host.monitoring.render()[0].decode().splitlines()
    assert 'model_sync_artifacts_total{outcome="rejected",reason="too_large"} 1.0' in metrics


async def test_an_unreadable_provenance_file_does_not_bring_back_an_older_model(fake, host):
    good_run(fake, "v1")
    good_run(fake, "v2")
    assert (await host.sync.synchronize_models(force=True)).outcome == "installed"
    (host.models_dir / ".sync" / "installed" / f"{SLOT}.json").write_text("{torn")

    report = await host.sync.synchronize_models(force=True)

    assert (report.outcome, host.serving()) == ("up_to_date", {SLOT: "v2"}), report
    assert fake.blob.downloads == 1
