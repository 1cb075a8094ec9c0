"""Transient is not permanent: a full disk, a timeout or a network fault is tried again later.

Only the content (digest, checksums, validation) rejects an artifact for good. The disk is a
real tmpfs of 2 MiB (``tests/small_disk.py``), so every ENOSPC comes from the kernel.
"""

from __future__ import annotations

import os
import time

from tests.artifacts import model_artifact
from tests.conftest import make_settings
from tests.fakes.github import FakeGitHub
from tests.small_disk import SmallDisk, small_disk
from tests.sync_host import EMBEDDED_VERSION, SLOT, Host, HostFactory, fake_settings

__all__ = ["small_disk"]  # the fixture, used by name

PADDING = 300_000  # random, so the zip is as large as what it extracts to


def padded_artifact(version: str) -> bytes:
    return model_artifact(version, extra={"scaler.pkl": os.urandom(PADDING)})


async def small_host(fake: FakeGitHub, disk: SmallDisk, start_host: HostFactory) -> Host:
    return await start_host(fake_settings(fake, disk.root / "models"))


def no_space_lines(logs: list[str]) -> list[str]:
    return [line for line in logs if "space" in line.lower()]


async def test_too_little_free_space_fails_the_cycle_and_a_later_one_installs(
    fake, small_disk, start_host, logs
):
    host = await small_host(fake, small_disk, start_host)
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", padded_artifact("v2"))
    filler = small_disk.fill(leave_free=PADDING // 2)

    short = await host.sync.synchronize_models(force=True)

    assert short.outcome == "failed", short
    assert "free" in short.reason
    assert host.artifact_record(artifact.id)["outcome"] == "failed"
    assert fake.blob.downloads == 0
    assert small_disk.tree() == []
    filler.unlink()

    freed = await host.sync.synchronize_models(force=True)

    assert freed.outcome == "installed", freed
    assert host.serving() == {SLOT: "v2"}


async def test_enospc_during_the_download_is_one_line_leaves_nothing_and_is_retried(
    fake, small_disk, start_host, logs
):
    host = await small_host(fake, small_disk, start_host)
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", padded_artifact("v2"))
    artifact.declared_size = 1000  # GitHub's size is only a hint: the disk fills mid-body
    filler = small_disk.fill(leave_free=PADDING // 2)

    full = await host.sync.synchronize_models(force=True)

    assert full.outcome == "failed", full
    assert "no space left" in full.reason
    assert small_disk.tree() == []
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert len(no_space_lines(logs)) == 1, no_space_lines(logs)
    assert not any("Traceback" in line or "crashed" in line for line in logs)
    filler.unlink()

    freed = await host.sync.synchronize_models(force=True)

    assert freed.outcome == "installed", freed
    assert host.serving() == {SLOT: "v2"}


async def test_enospc_while_extracting_is_one_line_leaves_nothing_and_is_retried(
    fake, small_disk, start_host, logs
):
    host = await small_host(fake, small_disk, start_host)
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", padded_artifact("v2"))
    # Room for the zip, not for the zip and what it extracts to.
    filler = small_disk.fill(leave_free=PADDING * 3 // 2)

    full = await host.sync.synchronize_models(force=True)

    assert full.outcome == "failed", full
    assert "no space left" in full.reason
    assert "extracting" in full.reason
    assert small_disk.tree() == []
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    assert len(no_space_lines(logs)) == 1, no_space_lines(logs)
    filler.unlink()

    freed = await host.sync.synchronize_models(force=True)

    assert freed.outcome == "installed", freed
    assert host.serving() == {SLOT: "v2"}


async def test_enospc_in_the_inbox_keeps_the_zip_for_the_next_look(small_disk, start_host, logs):
    settings = make_settings(small_disk.root / "models", github={"token": ""})
    host = await start_host(settings)
    inbox = await host.inbox()
    inbox.directory.mkdir()
    dropped = inbox.directory / "padded.zip"
    dropped.write_bytes(padded_artifact("v2"))
    os.utime(dropped, (0, 0))
    filler = small_disk.fill(leave_free=PADDING // 2)

    full = await inbox.process_pending()

    assert [r.outcome for r in full] == ["failed"]
    assert dropped.exists()
    assert small_disk.tree() == []
    assert len(no_space_lines(logs)) == 1, no_space_lines(logs)
    filler.unlink()

    freed = await inbox.process_pending()

    assert [r.outcome for r in freed] == ["installed"]
    assert host.serving() == {SLOT: "v2"}


# -- a blob host that drips bytes (issue 8, deadlines) -------------------------------------------


async def test_a_download_below_the_minimum_throughput_is_cut_and_tried_again_later(
    fake, models_dir, start_host, logs
):
    settings = fake_settings(
        fake, models_dir, resilience={"min_download_kbps": 8000, "download_deadline_seconds": 60}
    )
    host = await start_host(settings)
    run = fake.add_run()
    artifact = fake.add_artifact(run, "trained-model", padded_artifact("v2"))
    fake.blob.drip = (1000, 0.1)  # 10 kB/s, against a minimum of 1 MB/s

    started = time.monotonic()
    report = await host.sync.synchronize_models(force=True)
    elapsed = time.monotonic() - started

    assert report.outcome == "failed", report
    assert "8000 kbit/s" in report.reason
    assert elapsed < 5  # every attempt cut within a fraction of a second
    assert host.artifact_record(artifact.id)["outcome"] == "failed"
    assert list((models_dir / ".sync" / "downloads").iterdir()) == []
    fake.blob.drip = None

    again = await host.sync.synchronize_models(force=True)

    assert again.outcome == "installed", again


async def test_a_download_past_its_deadline_is_cut_whatever_its_pace(fake, models_dir, start_host):
    settings = fake_settings(
        fake, models_dir, resilience={"min_download_kbps": 1, "download_deadline_seconds": 1.5}
    )
    host = await start_host(settings)
    run = fake.add_run()
    fake.add_artifact(run, "trained-model", padded_artifact("v2"))
    fake.blob.drip = (16_000, 0.1)  # 160 kB/s: fast enough, but 300 kB take 2 s

    started = time.monotonic()
    report = await host.sync.synchronize_models(force=True)
    elapsed = time.monotonic() - started

    assert report.outcome == "failed", report
    assert "within 1.5s" in report.reason
    assert 1.4 < elapsed < 3
    assert list((models_dir / ".sync" / "downloads").iterdir()) == []
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
