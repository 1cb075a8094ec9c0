"""The quarantine store on a real models directory: what it keeps and in which order, how a
model is named by hand, that changes from several processes are all kept, that an unreadable
file fails closed, and that nothing else (start-up, an artifact, a journal) can touch it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from app.errors import AmbiguousSha256, QuarantineUnreadable
from app.install.journal import Journal, JournalEntry, UntrustedJournal, check_trusted
from app.install.layout import ModelsLayout
from app.install.lock import DirectoryLock
from app.install.quarantine import Quarantine, QuarantineEntry
from app.install.records import Origin
from app.settings import Settings
from tests.conftest import ROOT, start_models

SLOT = "unified_brain"
T0 = datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)


def sha(digit: str) -> str:
    return digit * 64


def entry(digest: str, *, at: datetime = T0, **fields: Any) -> QuarantineEntry:
    values: dict[str, Any] = {"slot": SLOT, "version": "v2", "why": "rolled back by the judge"}
    return QuarantineEntry(sha256=digest, at=at, **(values | fields))


def from_github(artifact_id: int = 42, run_id: int = 7, name: str = "trained-model") -> Origin:
    return Origin(source="github", artifact_id=artifact_id, run_id=run_id, artifact_name=name)


@pytest.fixture
def layout(models_dir: Path) -> ModelsLayout:
    return ModelsLayout(models_dir)


@pytest.fixture
def quarantine(layout: ModelsLayout) -> Quarantine:
    return Quarantine(layout)


# -- what it keeps ----------------------------------------------------------------------------


def test_a_missing_file_is_an_empty_quarantine_and_reading_writes_nothing(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    assert quarantine.entries() == []
    assert quarantine.holds(sha("a")) is None
    assert quarantine.holds_artifact(from_github()) is None
    assert not layout.sync_dir.exists()


def test_entries_are_kept_on_disk_newest_first(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    quarantine.add(entry(sha("a"), at=T0))
    quarantine.add(entry(sha("c"), at=T0 + timedelta(hours=2), origin=from_github()))
    quarantine.add(entry(sha("b"), at=T0 + timedelta(hours=1)))

    again = Quarantine(layout)  # another process reads the same file

    assert [e.sha256 for e in again.entries()] == [sha("c"), sha("b"), sha("a")]
    document = json.loads(layout.quarantine_file.read_text())
    newest = document["quarantine"][0]
    assert newest["at"] == "2025-01-08T16:30:22Z"
    assert newest["origin"]["artifact_id"] == 42
    assert set(newest) == {"sha256", "slot", "version", "at", "why", "origin"}


def test_adding_a_model_again_replaces_its_entry(quarantine: Quarantine) -> None:
    quarantine.add(entry(sha("a"), why="first"))
    quarantine.add(entry(sha("b")))
    quarantine.add(entry(sha("a"), why="second", at=T0 + timedelta(minutes=1)))

    entries = quarantine.entries()

    assert [e.sha256 for e in entries] == [sha("a"), sha("b")]
    assert entries[0].why == "second"


def test_an_entry_is_one_line_in_utc_to_the_second() -> None:
    eastern = timezone(timedelta(hours=2))
    made = entry(
        sha("A"), at=datetime(2025, 1, 8, 16, 30, 22, 999, tzinfo=eastern), why="lost\n money\t"
    )

    assert made.sha256 == sha("a")
    assert made.at == T0
    assert made.since == "2025-01-08T14:30:22Z"
    assert made.why == "lost money"
    with pytest.raises(ValueError, match="64 hex digits"):
        entry("abc")


def test_holds_finds_a_model_by_its_sha256(quarantine: Quarantine) -> None:
    quarantine.add(entry(sha("a")))

    assert quarantine.holds(sha("a")) == entry(sha("a"))
    assert quarantine.holds(sha("A")) is not None
    assert quarantine.holds(sha("b")) is None


ASKED = {
    "same": (from_github(), True),
    "same-id": (from_github(run_id=8, name="other"), True),
    "same-run-and-name": (from_github(artifact_id=43), True),
    "webhook": (from_github(artifact_id=43).model_copy(update={"source": "webhook"}), True),
    "other-run": (from_github(artifact_id=43, run_id=8), False),
    "other-name": (from_github(artifact_id=43, name="other"), False),
    "inbox": (Origin(source="inbox", artifact_name="trained-model", artifact_id=42), False),
    "cli": (Origin(source="cli", artifact_name="trained-model"), False),
}


@pytest.mark.parametrize(("asked", "held"), ASKED.values(), ids=ASKED.keys())
def test_holds_artifact_finds_the_artifact_a_model_came_in(
    quarantine: Quarantine, asked: Origin, held: bool
) -> None:
    quarantine.add(entry(sha("a"), origin=from_github()))
    quarantine.add(entry(sha("b")))  # no origin: found by its SHA-256 only

    assert (quarantine.holds_artifact(asked) is not None) is held


# -- naming a model by hand -----------------------------------------------------------------------


def test_release_takes_the_sha256_or_a_prefix_of_eight_digits(quarantine: Quarantine) -> None:
    quarantine.add(entry(sha("a")))
    quarantine.add(entry(sha("b")))

    assert quarantine.release(sha("a")) == entry(sha("a"))
    assert quarantine.release(" BBBBBBBB ") == entry(sha("b"))
    assert quarantine.entries() == []


def test_releasing_a_model_not_quarantined_answers_none_and_changes_nothing(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    quarantine.add(entry(sha("a")))
    before = layout.quarantine_file.read_bytes()

    assert quarantine.release("bbbbbbbb") is None
    assert layout.quarantine_file.read_bytes() == before


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("aaaaaaa", "at least 8 hex digits"),
        ("aaaaaaaz", "at least 8 hex digits"),
        ("a" * 65, "at least 8 hex digits"),
        ("abcdabcd", "starts the SHA-256 of 2 quarantined models"),
    ],
    ids=["short", "not-hex", "too-long", "ambiguous"],
)
def test_a_prefix_that_names_no_single_model_is_refused_with_a_reason(
    quarantine: Quarantine, given: str, message: str
) -> None:
    quarantine.add(entry("abcdabcd" + "1" * 56))
    quarantine.add(entry("abcdabcd" + "2" * 56))

    with pytest.raises(AmbiguousSha256, match=message):
        quarantine.release(given)
    assert len(quarantine.entries()) == 2


# -- several processes ----------------------------------------------------------------------------

ADDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from app.install.layout import ModelsLayout
    from app.install.quarantine import Quarantine, QuarantineEntry

    store = Quarantine(ModelsLayout(Path(sys.argv[1])))
    for number in range(int(sys.argv[3])):
        digest = f"{{sys.argv[2]}}{{number:02d}}".ljust(64, "0")
        store.add(QuarantineEntry(sha256=digest, slot="s", version="v", why="concurrent"))
    """
).format(root=str(ROOT))


def test_changes_from_several_processes_at_once_are_all_kept(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    adders = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(layout.root), prefix, "8"])
        for prefix in ("a", "b", "c")
    ]
    assert [adder.wait(timeout=60) for adder in adders] == [0, 0, 0]

    assert len(quarantine.entries()) == 24


def test_a_change_waits_for_the_quarantine_lock(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    held = DirectoryLock(layout.quarantine_lock)
    adding = threading.Thread(target=quarantine.add, args=(entry(sha("a")),))
    adding.start()
    time.sleep(0.3)
    assert not layout.quarantine_file.exists()  # still waiting for the holder

    held.release()
    adding.join(timeout=10)

    assert quarantine.holds(sha("a")) is not None


def test_a_change_clears_what_a_writer_killed_mid_write_left(
    quarantine: Quarantine, layout: ModelsLayout
) -> None:
    layout.sync_dir.mkdir()
    torn = layout.sync_dir / ".quarantine.json.x1y2z3.tmp"
    torn.write_text('{"quarant')

    quarantine.add(entry(sha("a")))

    assert not torn.exists()


# -- an unreadable file fails closed ---------------------------------------------------------------


CORRUPT = {
    "not-json": b'{"quarantine": [',
    "bad-entry": json.dumps({"quarantine": [{"sha256": "nope", "slot": SLOT}]}).encode(),
    "not-an-object": b"[]",
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_an_unreadable_file_refuses_every_question_and_change(
    quarantine: Quarantine, layout: ModelsLayout, content: bytes, logs: list[str]
) -> None:
    layout.sync_dir.mkdir()
    layout.quarantine_file.write_bytes(content)

    for ask in (
        quarantine.entries,
        lambda: quarantine.holds(sha("a")),
        lambda: quarantine.holds_artifact(from_github()),
        lambda: quarantine.check(sha("a")),
        lambda: quarantine.add(entry(sha("a"))),
        lambda: quarantine.release(sha("a")),
    ):
        with pytest.raises(QuarantineUnreadable, match="every model counts as quarantined"):
            ask()

    assert layout.quarantine_file.read_bytes() == content  # kept for whoever repairs it
    assert sum("[QUARANTINE]" in line and "unreadable" in line for line in logs) == 1


def test_a_repaired_file_is_read_again(quarantine: Quarantine, layout: ModelsLayout) -> None:
    layout.sync_dir.mkdir()
    layout.quarantine_file.write_bytes(b"garbage")
    with pytest.raises(QuarantineUnreadable):
        quarantine.entries()

    layout.quarantine_file.unlink()  # removing it releases every model

    assert quarantine.entries() == []


# -- nothing else touches it ---------------------------------------------------------------------


async def test_start_up_clears_leftovers_but_keeps_the_quarantine(
    settings: Settings, layout: ModelsLayout
) -> None:
    Quarantine(layout).add(entry(sha("a")))
    kept = layout.quarantine_file.read_bytes()
    (layout.downloads_dir).mkdir(parents=True)
    (layout.downloads_dir / "left.zip").write_bytes(b"partial")

    models = await start_models(settings)

    assert not layout.downloads_dir.exists()
    assert layout.quarantine_file.read_bytes() == kept
    assert models.quarantine.holds(sha("a")) is not None


def test_a_journal_that_would_write_the_quarantine_is_not_trusted() -> None:
    planted = Journal(
        "abc",
        (JournalEntry(".sync/quarantine.json", ".sync/staging/abc/x", None, sha("a")),),
        (),
    )

    with pytest.raises(UntrustedJournal, match="reserved"):
        check_trusted(planted)
