"""The artifact pipeline refuses what is quarantined, whichever source feeds it: the poll and a
webhook delivery (through the sync, before any download when the artifact itself is
quarantined), the inbox, and an install with no brain. A release makes it eligible again.

``tests/sync_host.py`` builds the service graph over the fake GitHub.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.install.quarantine import Quarantine, QuarantineEntry
from app.install.records import Origin
from app.services.installer import ArtifactInstaller
from app.services.state import StateStore
from tests.artifacts import model_artifact, model_bytes, sha256_hex
from tests.conftest import make_settings
from tests.fakes.github import DOWNLOAD_ARTIFACT, FakeGitHub, workflow_run_payload
from tests.ops_stack import ops_settings, running_ops
from tests.sync_host import EMBEDDED_VERSION, SLOT, Host, good_run, tree
from tests.test_webhook import SECRET, deliver, encoded

WHY = "rejected by hand: traded against the trend all morning"


def quarantine(store: Quarantine, version: str, origin: Origin | None = None) -> str:
    """Quarantine the model that ``model_artifact(version)`` holds; its SHA-256."""
    digest = sha256_hex(model_bytes(version))
    store.add(QuarantineEntry(sha256=digest, slot=SLOT, version=version, why=WHY, origin=origin))
    return digest


def github_origin(run_id: int, artifact_id: int) -> Origin:
    return Origin(
        source="github", run_id=run_id, artifact_id=artifact_id, artifact_name="trained-model"
    )


def no_download(fake: FakeGitHub) -> bool:
    return fake.requests[DOWNLOAD_ARTIFACT] == 0 and fake.blob.downloads == 0


# -- the poll ------------------------------------------------------------------------------------


async def test_a_quarantined_artifact_is_refused_before_download_until_released(
    fake: FakeGitHub, host: Host
) -> None:
    run, artifact_id = good_run(fake, "v2")
    digest = quarantine(host.models.quarantine, "v2", github_origin(run.id, artifact_id))

    refused = await host.sync.synchronize_models(force=True)
    again = await host.sync.synchronize_models(force=True)

    assert refused.outcome == "rejected", refused
    assert f"model sha256 {digest[:12]} (version v2) is quarantined: {WHY}" in refused.reason
    assert again.outcome == "up_to_date", again  # refused once, not again every cycle
    assert no_download(fake)
    assert host.artifact_record(artifact_id)["outcome"] == "rejected"
    assert host.serving() == {SLOT: EMBEDDED_VERSION}

    assert host.models.quarantine.release(digest[:12]) is not None
    installed = await host.sync.synchronize_models(force=True)

    assert installed.outcome == "installed", installed
    assert host.serving() == {SLOT: "v2"}
    assert fake.blob.downloads == 1


async def test_an_artifact_whose_model_is_quarantined_is_rejected_once_until_released(
    fake: FakeGitHub, host: Host
) -> None:
    _, artifact_id = good_run(fake, "v2")
    digest = quarantine(
        host.models.quarantine, "v2"
    )  # known by its SHA-256 only (from the inbox, say)
    before = tree(host.models_dir)

    refused = await host.sync.synchronize_models(force=True)
    again = await host.sync.synchronize_models(force=True)

    assert refused.outcome == "rejected", refused
    assert "is quarantined" in refused.reason
    assert again.outcome == "up_to_date", again
    assert fake.blob.downloads == 1  # downloaded once to learn its model, not every cycle
    assert host.artifact_record(artifact_id)["quarantined"] == digest
    assert tree(host.models_dir) == before

    host.models.quarantine.release(digest)
    installed = await host.sync.synchronize_models(force=True)

    assert installed.outcome == "installed", installed
    assert host.serving() == {SLOT: "v2"}
    assert fake.blob.downloads == 2


async def test_a_quarantine_refusal_is_counted_under_its_reason_code(
    fake: FakeGitHub, host: Host
) -> None:
    good_run(fake, "v2")
    quarantine(host.models.quarantine, "v2")

    await host.sync.synchronize_models(force=True)

    body = host.monitoring.render()[0].decode()
    assert 'model_sync_artifacts_total{outcome="rejected",reason="quarantined"} 1.0' in body


async def test_an_unreadable_quarantine_fails_the_cycle_and_is_tried_again(
    fake: FakeGitHub, host: Host
) -> None:
    good_run(fake, "v2")
    host.models.quarantine.path.write_text("[")

    failed = await host.sync.synchronize_models(force=True)
    host.models.quarantine.path.unlink()
    installed = await host.sync.synchronize_models(force=True)

    assert failed.outcome == "failed", failed
    assert "quarantine file" in failed.reason
    assert installed.outcome == "installed", installed


# -- a webhook delivery ----------------------------------------------------------------------------


async def test_a_webhook_delivery_of_a_quarantined_artifact_is_refused_with_the_reason(
    models_dir: Path, fake: FakeGitHub, logs: list[str]
) -> None:
    run, artifact_id = good_run(fake, "v2")
    settings = ops_settings(models_dir, fake, ops={"webhook_secret": SECRET})
    async with running_ops(settings) as stack:
        quarantine(stack.models.quarantine, "v2", github_origin(run.id, artifact_id))

        status, _ = await deliver(stack, encoded(workflow_run_payload(fake, run)))
        await stack.webhooks.drain()

        assert status == 202
        assert stack.serving() == EMBEDDED_VERSION
    assert no_download(fake)
    assert any(f"Webhook sync of run {run.id}: rejected" in line for line in logs)
    [refusal] = [line for line in logs if f"({artifact_id}) rejected" in line]
    assert "is quarantined" in refusal
    assert WHY in refusal


# -- the inbox, and an install with no brain ---------------------------------------------------


async def test_an_inbox_zip_whose_model_is_quarantined_is_rejected_with_the_reason(
    host: Host,
) -> None:
    inbox = await host.inbox()
    inbox.directory.mkdir(parents=True, exist_ok=True)
    dropped = inbox.directory / "offline-v2.zip"
    dropped.write_bytes(model_artifact("v2"))
    settled = time.time() - 60
    os.utime(dropped, (settled, settled))
    quarantine(host.models.quarantine, "v2")

    [result] = await inbox.process_pending()

    assert result.outcome == "rejected"
    rejected = inbox.directory / "rejected"
    assert (rejected / "offline-v2.zip").exists()
    reason = (rejected / "offline-v2.zip.reason.txt").read_text()
    assert "is quarantined" in reason
    assert WHY in reason
    assert host.serving() == {SLOT: EMBEDDED_VERSION}


async def test_without_a_brain_a_quarantined_model_is_not_installed_either(
    models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(models_dir)
    pipeline = ArtifactInstaller(settings, StateStore(models_dir), None)
    quarantine(pipeline.quarantine, "v2")
    zip_path = tmp_path / "v2.zip"
    zip_path.write_bytes(model_artifact("v2"))
    before = tree(models_dir)

    outcome = await pipeline.install_zip(zip_path, Origin(source="inbox", artifact_name="v2.zip"))

    assert outcome.outcome == "rejected"
    assert outcome.reason_code == "quarantined"
    assert tree(models_dir) == before
