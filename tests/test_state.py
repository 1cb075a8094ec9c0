"""The persistent sync state: round trips, corruption, atomic writes, ETag cache, provenance."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loguru import logger

from app.errors import ConfigurationError
from app.fsutil import write_bytes_atomically
from app.install.layout import ModelsLayout
from app.install.records import Provenance
from app.install.transaction import Transaction
from app.services.github_types import CachedPage
from app.services.state import StateStore, SyncState

NOW = datetime(2024, 5, 1, 12, 30, 45, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


@pytest.fixture
def store(models_dir: Path) -> StateStore:
    return StateStore(models_dir, clock=clock)


@pytest.fixture
def log_lines():
    """Every message logged by the package while the test runs."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="DEBUG")
    logger.enable("app")
    yield lines
    logger.disable("app")
    logger.remove(sink)


def provenance(slot: str = "unified_brain", **changes: object) -> Provenance:
    fields: dict[str, object] = {
        "slot": slot,
        "path": f"{slot}.onnx",
        "sha256": "ab" * 32,
        "version": "3.1.0",
        "source": "github",
        "run_id": 9000,
        "run_attempt": 2,
        "artifact_id": 555,
        "artifact_name": "trained-model",
        "head_sha": "c" * 40,
        "branch": "main",
        "digest": "sha256:" + "ef" * 32,
        "installed_at": NOW,
    }
    fields.update(changes)
    return Provenance.model_validate(fields)


def record_installed(store: StateStore, record: Provenance) -> None:
    """What an install leaves for the state to read: the provenance file (written, like every
    file under models/, by an install transaction), then the state reloaded and saved."""
    layout = ModelsLayout(store.folder.parent)
    transaction = Transaction(layout)
    transaction.place_record(record, layout.provenance_file(record.slot))
    transaction.apply()
    transaction.commit()
    store.load()
    store.flush()


def page(etag: str, *items: int, next_url: str | None = None) -> CachedPage:
    return CachedPage(etag=etag, items=tuple({"id": item} for item in items), next_url=next_url)


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


class TestRoundTrip:
    def test_everything_recorded_is_read_back(self, models_dir, store):
        record_installed(store, provenance())
        store.record_artifact(
            artifact_id=600,
            name="trained-model",
            outcome="rejected",
            reason="metadata.json: checksum mismatch for unified_brain.onnx",
            run_id=9100,
            run_attempt=1,
            digest="sha256:" + "01" * 32,
        )
        store.put("https://api.github.com/repos/o/r/actions/runs?branch=main", page('"e1"', 1, 2))
        store.record_sync(outcome="rejected", reason="checksum mismatch", artifact_id=600)

        again = StateStore(models_dir).load()

        assert again == store.state
        assert again.installed == {"unified_brain": provenance()}
        assert again.artifacts[600].outcome == "rejected"
        assert again.artifacts[600].seen_at == NOW
        assert again.last_sync is not None
        assert again.last_sync.artifact_id == 600
        assert StateStore(models_dir).get(
            "https://api.github.com/repos/o/r/actions/runs?branch=main"
        ) == page('"e1"', 1, 2)

    def test_the_provenance_file_is_the_record_of_what_is_installed(self, models_dir, store):
        record_installed(store, provenance())

        written = models_dir / ".sync" / "installed" / "unified_brain.json"
        assert Provenance.model_validate_json(written.read_bytes()) == provenance()
        # state.json does not repeat it, so the two can never disagree.
        assert "installed" not in json.loads(store.state_path.read_text())

    def test_a_missing_file_is_an_empty_state_and_nothing_is_written(self, models_dir, store):
        assert store.load() == SyncState()
        assert store.processed_artifact_ids() == set()
        assert files_under(models_dir) == []

    def test_a_file_from_another_version_loads(self, models_dir, store):
        store.folder.mkdir()
        store.state_path.write_text(
            json.dumps(
                {
                    "schema": 7,  # a key this version does not know
                    "artifacts": {
                        "12": {
                            "artifact_id": 12,
                            "name": "m",
                            "outcome": "expired",
                            "reason": "gone",
                            "seen_at": "2024-01-01T00:00:00Z",
                            "size": 3,
                        }
                    },
                }
            )
        )
        state = store.load()
        assert state.artifacts[12].run_id is None
        assert store.processed_artifact_ids() == {12}

    def test_provenance_installed_outside_the_state_is_marked_processed(self, models_dir, store):
        # A crash between the provenance file and state.json, or a state.json restored from an
        # old copy that says the artifact failed: the provenance file wins.
        store.record_artifact(artifact_id=555, name="trained-model", outcome="failed", reason="x")
        installed = models_dir / ".sync" / "installed"
        installed.mkdir()
        (installed / "unified_brain.json").write_text(provenance().model_dump_json())

        again = StateStore(models_dir)
        assert again.processed_artifact_ids() == {555}
        assert again.state.artifacts[555].outcome == "installed"
        assert again.installed_run("unified_brain") == (9000, 2)


class TestCorruption:
    def install_two_slots(self, models_dir: Path) -> None:
        record_installed(StateStore(models_dir, clock=clock), provenance())
        record_installed(
            StateStore(models_dir, clock=clock),
            provenance("risk", run_id=9100, run_attempt=1, artifact_id=777),
        )

    @pytest.mark.parametrize(
        ("content", "reason"),
        [
            (b'{"artifacts": {', "invalid JSON: "),
            (b"\xff\xfe not even text", "invalid JSON: "),
            (b'{"artifacts": {"1": {"outcome": "exploded"}}}', "artifacts.1.artifact_id: "),
            (b"[]", "top level: "),
        ],
    )
    def test_corrupt_file_is_reported_moved_aside_and_rebuilt_from_provenance(
        self, models_dir, log_lines, content, reason
    ):
        self.install_two_slots(models_dir)
        state_path = models_dir / ".sync" / "state.json"
        state_path.write_bytes(content)

        store = StateStore(models_dir, clock=clock)
        state = store.load()

        errors = [line for line in log_lines if line.startswith("❌")]
        assert len(errors) == 1
        assert errors[0].startswith(f"❌ [CLOUD-SYNC] Sync state {state_path} is corrupt ({reason}")
        assert errors[0].endswith("); rebuilding it")
        aside = models_dir / ".sync" / "state.json.corrupt-20240501T123045Z"
        assert aside.read_bytes() == content
        assert not state_path.exists()
        assert store.processed_artifact_ids() == {555, 777}
        assert {record.outcome for record in state.artifacts.values()} == {"installed"}
        assert store.installed_run("risk") == (9100, 1)

        store.flush()  # the rebuilt state is written back
        assert StateStore(models_dir).processed_artifact_ids() == {555, 777}

    def test_a_second_corruption_in_the_same_second_keeps_both_copies(self, models_dir):
        sync = models_dir / ".sync"
        sync.mkdir()
        for content in ("first", "second"):
            (sync / "state.json").write_text(content)
            StateStore(models_dir, clock=clock).load()
        assert (sync / "state.json.corrupt-20240501T123045Z").read_text() == "first"
        assert (sync / "state.json.corrupt-20240501T123045Z-1").read_text() == "second"

    def test_an_unreadable_state_is_reported_not_raised(self, models_dir, store, log_lines):
        store.state_path.mkdir(parents=True)  # a folder where the file should be
        assert store.load() == SyncState()
        assert any("cannot be read" in line for line in log_lines)

    def test_a_corrupt_provenance_file_is_reported_and_ignored(self, models_dir, log_lines):
        record_installed(StateStore(models_dir), provenance())
        broken = models_dir / ".sync" / "installed" / "risk.json"
        broken.write_text('{"slot": "risk"}')

        store = StateStore(models_dir)
        assert set(store.state.installed) == {"unified_brain"}
        assert any(
            line.startswith(f"❌ [CLOUD-SYNC] Provenance file {broken} is unreadable (")
            for line in log_lines
        )


class TestAtomicWrites:
    def test_saves_leave_no_temporary_files(self, models_dir, store):
        record_installed(store, provenance())
        for artifact_id in range(5):
            store.record_artifact(artifact_id=artifact_id, name="m", outcome="rejected", reason="r")
        assert files_under(models_dir) == [
            ".sync",
            ".sync/installed",
            ".sync/installed/unified_brain.json",
            ".sync/state.json",
        ]

    def test_a_crash_before_the_rename_leaves_the_old_file(self, models_dir, store, monkeypatch):
        store.record_artifact(artifact_id=1, name="m", outcome="rejected", reason="r")
        before = store.state_path.read_bytes()

        def crash(*args: object) -> None:
            raise OSError("simulated crash before the rename")

        # A real power cut cannot be staged in a test; failing the rename is the same moment.
        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            store.record_artifact(artifact_id=2, name="m", outcome="rejected", reason="r")
        monkeypatch.undo()

        assert store.state_path.read_bytes() == before
        assert files_under(store.folder) == ["state.json"]
        assert StateStore(models_dir).processed_artifact_ids() == {1}

    def test_write_bytes_atomically_replaces_text_and_bytes(self, tmp_path):
        target = tmp_path / "file.json"
        write_bytes_atomically(target, "first ✓")
        assert target.read_text(encoding="utf-8") == "first ✓"
        write_bytes_atomically(target, b"\x00second")
        assert target.read_bytes() == b"\x00second"
        assert files_under(tmp_path) == ["file.json"]


class TestProcessedArtifacts:
    def test_only_a_transient_failure_is_retried(self, store):
        for artifact_id, outcome in enumerate(
            ["installed", "up_to_date", "rejected", "expired", "failed"], start=1
        ):
            store.record_artifact(artifact_id=artifact_id, name="m", outcome=outcome, reason="r")
        assert store.processed_artifact_ids() == {1, 2, 3, 4}

    def test_a_retried_artifact_takes_its_latest_outcome(self, store):
        store.record_artifact(artifact_id=1, name="m", outcome="failed", reason="timeout")
        store.record_artifact(artifact_id=1, name="m", outcome="rejected", reason="bad zip")
        assert store.processed_artifact_ids() == {1}
        assert store.state.artifacts[1].reason == "bad zip"

    def test_old_records_are_dropped_but_never_the_installed_one(self, models_dir):
        store = StateStore(models_dir, max_artifact_records=3)
        record_installed(store, provenance(artifact_id=1))
        for artifact_id in range(2, 7):
            store.record_artifact(artifact_id=artifact_id, name="m", outcome="rejected", reason="r")
        assert sorted(store.state.artifacts) == [1, 5, 6]


class TestInstalledRun:
    def test_the_run_of_each_slot(self, store):
        record_installed(store, provenance())
        record_installed(store, provenance("risk", run_id=8000, run_attempt=None))
        record_installed(store, provenance("inbox", source="inbox", run_id=None, artifact_id=None))
        assert store.installed_run("unified_brain") == (9000, 2)
        assert store.installed_run("risk") == (8000, 1)  # attempt unknown: the first
        assert store.installed_run("inbox") is None
        assert store.installed_run("absent") is None

    def test_a_new_install_replaces_the_slot_provenance(self, models_dir, store):
        record_installed(store, provenance())
        record_installed(store, provenance(run_id=9500, run_attempt=1, artifact_id=556))
        assert StateStore(models_dir).installed_run("unified_brain") == (9500, 1)
        assert StateStore(models_dir).processed_artifact_ids() == {555, 556}

    @pytest.mark.parametrize("slot", ["", ".hidden", "../escape", "a/b", "a\\b"])
    def test_a_slot_name_that_is_not_a_file_name_is_refused(self, store, slot):
        with pytest.raises(ConfigurationError, match="cannot name a provenance file"):
            record_installed(store, provenance(slot))
        assert (
            not (store.folder / "installed").exists()
            or files_under(store.folder / "installed") == []
        )


class TestETagCache:
    URL = "https://api.github.com/repos/o/r/actions/runs?page={}"

    def test_pages_are_saved_by_flush_not_by_put(self, models_dir, store):
        store.record_sync(outcome="up_to_date", reason="nothing new")
        before = store.state_path.read_bytes()

        store.put(self.URL.format(1), page('"a"', 1))
        assert store.state_path.read_bytes() == before
        assert StateStore(models_dir).get(self.URL.format(1)) is None

        store.flush()
        assert StateStore(models_dir).get(self.URL.format(1)) == page('"a"', 1)

    def test_flush_without_changes_writes_nothing(self, store):
        store.put(self.URL.format(1), page('"a"', 1))
        store.flush()
        store.state_path.write_text("{}")  # any write by flush would replace this
        store.put(self.URL.format(1), page('"a"', 1))  # the same page again
        store.flush()
        assert store.state_path.read_text() == "{}"

    def test_the_oldest_pages_are_evicted(self, models_dir):
        store = StateStore(models_dir, max_cached_pages=3)
        for number in range(1, 5):
            store.put(self.URL.format(number), page(f'"{number}"', number))
        store.put(self.URL.format(2), page('"2b"', 2, next_url=self.URL.format(3)))  # refreshed
        store.put(self.URL.format(5), page('"5"', 5))
        store.flush()

        again = StateStore(models_dir)
        assert [again.get(self.URL.format(n)) is not None for n in range(1, 6)] == [
            False,
            True,
            False,
            True,
            True,
        ]
        assert again.get(self.URL.format(2)) == page('"2b"', 2, next_url=self.URL.format(3))

    @pytest.mark.parametrize(
        "url",
        [
            "https://api.github.com/repos/o/r/actions/runs?access_token=s3cr3t-value",
            "https://x-access-token:s3cr3t-value@api.github.com/repos/o/r/actions/runs",
            "https://blob.example/zip?sig=s3cr3t-value&se=2024",
        ],
    )
    def test_a_url_carrying_credentials_is_never_saved(self, store, log_lines, url):
        store.put(url, page('"a"', 1))
        store.record_sync(outcome="up_to_date", reason="r")
        assert store.get(url) is None
        assert "s3cr3t-value" not in store.state_path.read_text()
        assert "⚠️ [CLOUD-SYNC] Not caching a page whose URL carries credentials" in log_lines
