"""End to end: zips dropped in ``models/inbox/`` go through the same verify-extract-swap path.

The graph is the host's (``Core`` with a started brain) without a GitHub token, as on an
air-gapped host; every check is on the model that decides, the files on disk and the state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.brain.brain import TradingBrain
from app.containers import Core, resolve, trading_brain
from app.install.lock import DirectoryLock
from app.services.inbox import SETTLE_SECONDS, LocalInbox
from app.settings import Settings
from tests.artifacts import hostile_artifact, model_artifact, sha256_hex
from tests.conftest import make_settings

FEATURES = [0.1] * 16
SLOT = "unified_brain"
EMBEDDED_VERSION = "embedded-1"


@dataclass
class Rig:
    """The inbox and the brain it installs into, over one models directory."""

    settings: Settings
    brain: TradingBrain
    inbox: LocalInbox

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    def serving(self) -> dict[str, str]:
        return dict(self.brain.decide(FEATURES).versions)

    def drop(self, name: str, content: bytes, *, age: float = 60.0) -> Path:
        """Put a zip in the inbox, last modified ``age`` seconds ago."""
        self.inbox.directory.mkdir(parents=True, exist_ok=True)
        path = self.inbox.directory / name
        path.write_bytes(content)
        moment = time.time() - age
        os.utime(path, (moment, moment))
        return path

    def provenance(self) -> dict[str, Any]:
        path = self.models_dir / ".sync" / "installed" / f"{SLOT}.json"
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def listing(self, folder: str = "") -> list[str]:
        directory = self.inbox.directory / folder if folder else self.inbox.directory
        return sorted(p.name for p in directory.iterdir() if p.is_file())


@pytest.fixture
async def rig(models_dir: Path) -> AsyncIterator[Rig]:
    settings = make_settings(models_dir, github={"token": ""})
    async with aiohttp.ClientSession() as session:
        brain = trading_brain(settings)
        core = Core(config=settings, http=session, brain=brain)
        await (await resolve(core.models)).start()
        yield Rig(settings, brain, await resolve(core.inbox))


def models_tree(models_dir: Path) -> dict[str, str]:
    """The models directory's files and their SHA-256, leaving out the inbox and sync state."""
    return {
        str(path.relative_to(models_dir)): sha256_hex(path.read_bytes())
        for path in sorted(models_dir.rglob("*"))
        if path.is_file() and not {"inbox", ".sync"} & set(path.relative_to(models_dir).parts)
    }


async def test_a_good_zip_is_installed_and_moved_to_processed(rig, logs):
    rig.drop("offline-v2.zip", model_artifact("v2"))

    results = await rig.inbox.process_pending()

    assert [(r.name, r.outcome) for r in results] == [("offline-v2.zip", "installed")]
    assert rig.serving() == {SLOT: "v2"}
    assert rig.listing() == []
    assert rig.listing("processed") == ["offline-v2.zip"]
    assert results[0].moved_to == rig.inbox.directory / "processed" / "offline-v2.zip"
    provenance = rig.provenance()
    assert (provenance["source"], provenance["artifact_name"], provenance["run_id"]) == (
        "inbox",
        "offline-v2.zip",
        None,
    )
    assert any("Installing from the inbox: offline-v2.zip" in line for line in logs)
    assert any("✅ [CLOUD-SYNC] Model hot-swap completed successfully" in line for line in logs)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (model_artifact("lying", declared_sha256="1" * 64), "metadata.json declares SHA-256"),
        (b"this is not a zip file", "not a readable zip"),
        (model_artifact("v2", model=b"not an onnx model"), ""),
    ],
    ids=["checksum mismatch", "not a zip", "not a model"],
)
async def test_a_bad_zip_is_moved_to_rejected_with_its_reason(rig, content, reason):
    rig.drop("bad.zip", content)
    before = models_tree(rig.models_dir)

    results = await rig.inbox.process_pending()

    assert [r.outcome for r in results] == ["rejected"]
    assert rig.listing() == []
    assert rig.listing("rejected") == ["bad.zip", "bad.zip.reason.txt"]
    written = (rig.inbox.directory / "rejected" / "bad.zip.reason.txt").read_text()
    assert written == results[0].reason + "\n"
    assert reason in written
    assert written.strip()
    assert rig.serving() == {SLOT: EMBEDDED_VERSION}
    assert models_tree(rig.models_dir) == before


async def test_a_zip_still_being_written_is_not_taken_yet(rig):
    fresh = rig.drop("arriving.zip", model_artifact("v2"), age=0)

    first = await rig.inbox.process_pending()
    os.utime(fresh, (time.time() - SETTLE_SECONDS - 1, time.time() - SETTLE_SECONDS - 1))
    second = await rig.inbox.process_pending()

    assert first == []
    assert [r.outcome for r in second] == ["installed"]
    assert rig.serving() == {SLOT: "v2"}


async def test_hidden_names_and_other_files_are_left_alone(rig):
    rig.drop(".arriving.zip", model_artifact("hidden"))
    rig.drop("notes.txt", b"not an artifact")

    results = await rig.inbox.process_pending()

    assert results == []
    assert rig.listing() == [".arriving.zip", "notes.txt"]
    assert rig.serving() == {SLOT: EMBEDDED_VERSION}


async def test_zips_are_taken_oldest_first(rig):
    rig.drop("b-newer.zip", model_artifact("v3"), age=30)
    rig.drop("a-older.zip", model_artifact("v2"), age=60)

    results = await rig.inbox.process_pending()

    assert [r.name for r in results] == ["a-older.zip", "b-newer.zip"]
    assert rig.serving() == {SLOT: "v3"}
    assert rig.listing("processed") == ["a-older.zip", "b-newer.zip"]


async def test_the_same_name_dropped_twice_keeps_both(rig):
    rig.drop("model.zip", model_artifact("v2"))
    await rig.inbox.process_pending()
    rig.drop("model.zip", model_artifact("v3"))

    results = await rig.inbox.process_pending()

    assert [r.outcome for r in results] == ["installed"]
    processed = rig.listing("processed")
    assert len(processed) == 2
    assert "model.zip" in processed
    assert rig.serving() == {SLOT: "v3"}


async def test_while_another_process_holds_the_sync_lock_the_zip_stays(rig, models_dir):
    rig.drop("waiting.zip", model_artifact("v2"))
    # flock locks belong to an open file description: a second open in this process conflicts
    # exactly as another process's would.
    other = DirectoryLock(models_dir / ".sync" / "sync.lock")
    try:
        while_held = await rig.inbox.process_pending()
    finally:
        other.release()
    listed_while_held = rig.listing()
    after = await rig.inbox.process_pending()

    assert while_held == []
    assert listed_while_held == ["waiting.zip"]
    assert [r.outcome for r in after] == ["installed"]
    assert rig.serving() == {SLOT: "v2"}


async def test_while_the_models_directory_is_busy_the_zip_stays_for_later(rig, models_dir):
    rig.drop("waiting.zip", model_artifact("v2"))

    writer = DirectoryLock(models_dir / ".sync" / "write.lock")
    try:
        while_busy = await rig.inbox.process_pending()
    finally:
        writer.release()
    listed_while_busy = rig.listing()
    after = await rig.inbox.process_pending()

    assert [r.outcome for r in while_busy] == ["failed"]
    assert while_busy[0].moved_to is None
    assert listed_while_busy == ["waiting.zip"]
    assert [r.outcome for r in after] == ["installed"]
    assert rig.serving() == {SLOT: "v2"}


async def test_the_inbox_loop_creates_its_folder_and_installs_until_stopped(rig):
    looks: list[float] = []

    async def sleep(seconds: float) -> bool:
        looks.append(seconds)
        if len(looks) == 1:  # a zip arrives between the first and the second look
            rig.drop("later.zip", model_artifact("v2"))
        return len(looks) == 2

    await rig.inbox.run_forever(sleep)

    assert rig.inbox.directory.is_dir()
    assert looks == [rig.settings.cloud_sync.inbox_poll_seconds] * 2
    assert rig.listing("processed") == ["later.zip"]
    assert rig.serving() == {SLOT: "v2"}


# -- poison zips: one bad zip is rejected with its reason, the rest go on (issue 8) -----------


def _deep_metadata(depth: int) -> bytes:
    return b'{"version": "v", "x": ' + b"[" * depth + b"]" * depth + b"}"


POISON = {
    # A name component longer than the filesystem allows (ENAMETOOLONG at open()).
    "long-name.zip": [("a" * 300 + ".onnx", b"model"), ("metadata.json", b"{}")],
    # Every component short, but the whole path longer than PATH_MAX (ENAMETOOLONG at mkdir).
    "long-path.zip": [("/".join(["d" * 200] * 25) + "/m.onnx", b"model")],
    # Parsing would recurse 100,000 deep.
    "deep-metadata.zip": [
        ("unified_brain.onnx", b"model"),
        ("metadata.json", _deep_metadata(100_000)),
    ],
}


async def test_poison_zips_are_rejected_one_by_one_and_the_good_zip_behind_them_installs(
    rig, tmp_path, logs
):
    for age, (name, members) in enumerate(POISON.items()):
        rig.drop(name, hostile_artifact(tmp_path, members), age=100 - age)
    rig.drop("good.zip", model_artifact("v2"), age=10)

    results = await rig.inbox.process_pending()

    assert [(r.name, r.outcome) for r in results] == [
        *((name, "rejected") for name in POISON),
        ("good.zip", "installed"),
    ]
    assert rig.serving() == {SLOT: "v2"}
    assert rig.listing() == []
    rejected = rig.inbox.directory / "rejected"
    reasons = {name: (rejected / f"{name}.reason.txt").read_text() for name in POISON}
    assert "longer than 255 bytes" in reasons["long-name.zip"]
    assert "too long" in reasons["long-path.zip"]
    assert "nested" in reasons["deep-metadata.zip"]
    assert not any("Inbox look failed" in line for line in logs)
    assert list((rig.models_dir / ".sync" / "work").iterdir()) == []


async def test_an_unexpected_error_on_one_zip_rejects_that_zip_and_the_next_installs(
    rig, monkeypatch
):
    real = rig.inbox._pipeline.install_zip
    poisoned = rig.drop("poison.zip", model_artifact("v9"), age=60)

    async def install_zip(path, origin):
        if path == poisoned:
            raise RuntimeError("a bug in handling this zip")
        return await real(path, origin)

    monkeypatch.setattr(rig.inbox._pipeline, "install_zip", install_zip)
    rig.drop("good.zip", model_artifact("v2"), age=30)

    results = await rig.inbox.process_pending()

    assert [(r.name, r.outcome) for r in results] == [
        ("poison.zip", "rejected"),
        ("good.zip", "installed"),
    ]
    reason = (rig.inbox.directory / "rejected" / "poison.zip.reason.txt").read_text()
    assert "a bug in handling this zip" in reason
