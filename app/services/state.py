"""The sync's memory across restarts, under ``models/.sync/``.

::

    models/.sync/state.json               artifacts seen and their outcome, ETag cache, last sync
    models/.sync/installed/<slot>.json    provenance of the model in service, one file per slot

The provenance files are the source of truth of what is installed: ``state.json`` does not repeat
them, and when it is lost or corrupt it is rebuilt from them, with every installed artifact marked
as such so it is never downloaded or installed again. Every file is replaced atomically.

The store is synchronous and holds the state in memory; it is meant for one writer, the sync
service, which holds the models directory's lock while it writes. A save is one small fsynced
file, so an async caller may make it directly or through ``asyncio.to_thread``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.fsutil import write_bytes_atomically
from app.install.layout import ModelsLayout
from app.install.records import Provenance, Records, describe_invalid
from app.services.github_types import CachedPage
from app.services.outcome import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

MAX_CACHED_PAGES = 50
MAX_ARTIFACT_RECORDS = 1000


# Query parameter names that suggest a credential; a URL with one is never cached, so never
# saved. The GitHub client sends its token in a header, so API URLs never match.
_SECRET_QUERY_WORDS = ("token", "secret", "sig", "key", "password", "auth")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    # Unknown keys are ignored and optional ones default to None, so that a file written by a
    # newer or older version still loads.
    model_config = ConfigDict(extra="ignore")


class ArtifactRecord(_Record):
    """What became of one GitHub artifact."""

    artifact_id: int
    name: str
    run_id: int | None = None
    run_attempt: int | None = None
    outcome: Outcome
    reason: str
    digest: str | None = None
    seen_at: datetime
    # The SHA-256 of the quarantined model that refused it: remembered only while that lasts.
    quarantined: str | None = None


class LastSync(_Record):
    """How the last synchronization cycle ended."""

    at: datetime
    outcome: str
    reason: str
    artifact_id: int | None = None


class CachedPageModel(_Record):
    """A :class:`CachedPage` as stored in ``state.json``."""

    etag: str
    items: list[dict[str, Any]]
    next_url: str | None

    @classmethod
    def from_page(cls, page: CachedPage) -> CachedPageModel:
        return cls(etag=page.etag, items=list(page.items), next_url=page.next_url)

    def to_page(self) -> CachedPage:
        return CachedPage(etag=self.etag, items=tuple(self.items), next_url=self.next_url)


class SyncState(_Record):
    """Everything ``state.json`` remembers, plus the installed provenance read beside it."""

    artifacts: dict[int, ArtifactRecord] = Field(default_factory=dict)
    # Oldest first: insertion order is eviction order, and JSON objects keep it.
    etags: dict[str, CachedPageModel] = Field(default_factory=dict)
    last_sync: LastSync | None = None
    # The last cycle that completed (installed, up to date, rejected): what the minimum interval
    # between cycles counts from. A failed cycle is in last_sync only.
    last_completed_sync: LastSync | None = None
    # Completed runs with nothing (left) to install: their artifact lists are final, so they
    # need not be listed again. Oldest first; bounded.
    exhausted_runs: list[int] = Field(default_factory=list)
    # Read from installed/<slot>.json, the source of truth; not written to state.json.
    installed: dict[str, Provenance] = Field(default_factory=dict, exclude=True)


def _holds_credentials(url: str) -> bool:
    parts = urlsplit(url)
    if parts.username or parts.password:
        return True
    names = (name.casefold() for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return any(word in name for name in names for word in _SECRET_QUERY_WORDS)


def _installed_record(provenance: Provenance, artifact_id: int) -> ArtifactRecord:
    return ArtifactRecord(
        artifact_id=artifact_id,
        name=provenance.artifact_name or "",
        run_id=provenance.run_id,
        run_attempt=provenance.run_attempt,
        outcome=Outcome.INSTALLED,
        reason=f"installed into slot {provenance.slot}",
        digest=provenance.digest,
        seen_at=provenance.installed_at,
    )


class StateStore:
    """Reads and atomically writes the sync state; also the GitHub client's ETag cache.

    ``record_*`` methods save at once: an outcome must survive a crash. ETag pages are only
    kept in memory by :meth:`put` and saved by :meth:`flush` (or any later save), which the sync
    service calls at the end of a cycle; a cycle reads several pages, and one fsync per page would
    buy nothing, since a lost page only costs one unconditional request.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        max_cached_pages: int = MAX_CACHED_PAGES,
        max_artifact_records: int = MAX_ARTIFACT_RECORDS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        layout = ModelsLayout(models_dir)
        self.folder = layout.sync_dir
        self.state_path = layout.state_file
        self._records = Records(layout)
        self._max_cached_pages = max_cached_pages
        self._max_artifact_records = max_artifact_records
        self._clock = clock
        self._state: SyncState | None = None
        self._dirty = False

    @property
    def state(self) -> SyncState:
        """The state in memory, loaded from disk on first use."""
        if self._state is None:
            return self.load()
        return self._state

    def load(self) -> SyncState:
        """Read the state from disk; a missing or corrupt file is rebuilt, never raised."""
        self._dirty = False
        state = self._read_state_file()
        state.installed = self._read_provenance_files()
        for provenance in state.installed.values():
            artifact_id = provenance.artifact_id
            known = state.artifacts.get(artifact_id) if artifact_id is not None else None
            if artifact_id is not None and (
                known is None or known.outcome is not Outcome.INSTALLED
            ):
                # The provenance files win: an installed artifact is never fetched again.
                state.artifacts[artifact_id] = _installed_record(provenance, artifact_id)
                self._dirty = True
        self._state = state
        return state

    def save(self, state: SyncState | None = None) -> None:
        """Write ``state`` (default: the one in memory) to ``state.json`` atomically."""
        if state is not None:
            self._state = state
        current = self.state
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(self.state_path, current.model_dump_json(indent=2))
        self._dirty = False

    def flush(self) -> None:
        """Save if anything changed since the last save (ETag pages, a rebuilt state)."""
        if self._dirty:
            self.save()

    def record_artifact(
        self,
        *,
        artifact_id: int,
        name: str,
        outcome: Outcome,
        reason: str,
        run_id: int | None = None,
        run_attempt: int | None = None,
        digest: str | None = None,
        quarantined: str | None = None,
    ) -> ArtifactRecord:
        """Remember what became of an artifact, and save."""
        record = ArtifactRecord(
            artifact_id=artifact_id,
            name=name,
            run_id=run_id,
            run_attempt=run_attempt,
            outcome=outcome,
            reason=reason,
            digest=digest,
            seen_at=self._clock(),
            quarantined=quarantined,
        )
        self._store_record(record)
        self.save()
        return record

    def record_sync(
        self,
        *,
        outcome: str,
        reason: str,
        artifact_id: int | None = None,
        completed: bool = False,
    ) -> LastSync:
        """Remember how a synchronization cycle ended, and save (with any cached pages).

        ``completed``: the cycle did its job (whatever it found); only such a cycle is
        remembered as ``last_completed_sync``.
        """
        last = LastSync(at=self._clock(), outcome=outcome, reason=reason, artifact_id=artifact_id)
        self.state.last_sync = last
        if completed:
            self.state.last_completed_sync = last
        self.save()
        return last

    def installed_run(self, slot: str) -> tuple[int, int] | None:
        """(run id, run attempt) of the slot's model, or None when it did not come from a run."""
        provenance = self.state.installed.get(slot)
        if provenance is None or provenance.run_id is None:
            return None
        return (provenance.run_id, provenance.run_attempt or 1)

    def read_installed(self) -> dict[str, Provenance]:
        """The provenance files as they are on disk now; the in-memory state is left alone
        (a reader such as ``/status`` must not drop what a running cycle has not flushed)."""
        return self._read_provenance_files()

    def processed_artifact_ids(self) -> set[int]:
        """Artifacts not to download again: all but those that failed for a transient reason."""
        return {
            artifact_id
            for artifact_id, record in self.state.artifacts.items()
            if record.outcome.final
        }

    def forget_released(self, quarantined: Collection[str]) -> list[ArtifactRecord]:
        """Forget the artifacts refused because of a quarantine since released (`quarantined`:
        the SHA-256s still quarantined), and that their runs were exhausted: they are eligible
        again. Kept in memory until a flush (forgetting again after a crash changes nothing)."""
        state = self.state
        released = [
            record
            for record in state.artifacts.values()
            if record.quarantined is not None and record.quarantined not in quarantined
        ]
        for record in released:
            del state.artifacts[record.artifact_id]
            if record.run_id in state.exhausted_runs:
                state.exhausted_runs.remove(record.run_id)
            self._dirty = True
        return released

    def is_exhausted(self, run_id: int) -> bool:
        """True when `run_id` was found to have nothing (left) to install."""
        return run_id in self.state.exhausted_runs

    def mark_exhausted(self, run_id: int) -> None:
        """Remember that `run_id` has nothing to install (kept in memory until a flush)."""
        runs = self.state.exhausted_runs
        if run_id in runs:
            return
        runs.append(run_id)
        del runs[: max(0, len(runs) - self._max_artifact_records)]
        self._dirty = True

    # ETagCache protocol (app.services.github_types)

    def get(self, url: str) -> CachedPage | None:
        """The page last seen at ``url``, for a conditional request."""
        stored = self.state.etags.get(url)
        return stored.to_page() if stored is not None else None

    def put(self, url: str, page: CachedPage) -> None:
        """Keep ``page`` in memory until :meth:`flush`; beyond the limit the oldest page goes."""
        if _holds_credentials(url):
            logger.warning("⚠️ [CLOUD-SYNC] Not caching a page whose URL carries credentials")
            return
        etags = self.state.etags
        stored = CachedPageModel.from_page(page)
        if etags.get(url) == stored:
            return
        etags.pop(url, None)  # re-inserted last: it is now the newest
        etags[url] = stored
        for oldest in list(etags)[: max(0, len(etags) - self._max_cached_pages)]:
            del etags[oldest]
        self._dirty = True

    # Internals

    def _store_record(self, record: ArtifactRecord) -> None:
        artifacts = self.state.artifacts
        artifacts[record.artifact_id] = record
        excess = len(artifacts) - self._max_artifact_records
        if excess <= 0:
            return
        # Drop the oldest artifacts (smallest ids) but never an installed one: the oldest are
        # older than the installed model, which the selection skips anyway.
        installed_ids = {p.artifact_id for p in self.state.installed.values()}
        for artifact_id in sorted(artifacts):
            if excess == 0:
                break
            if artifact_id not in installed_ids:
                del artifacts[artifact_id]
                excess -= 1

    def _read_state_file(self) -> SyncState:
        path = self.state_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return SyncState()
        except OSError as error:
            logger.error(
                f"❌ [CLOUD-SYNC] Sync state {path} cannot be read ({error.strerror}); "
                "rebuilding it"
            )
            self._dirty = True
            return SyncState()
        try:
            return SyncState.model_validate_json(raw)
        except ValidationError as error:
            reason = describe_invalid(error)
        logger.error(f"❌ [CLOUD-SYNC] Sync state {path} is corrupt ({reason}); rebuilding it")
        self._move_aside(path)
        self._dirty = True
        return SyncState()

    def _move_aside(self, path: Path) -> None:
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        counter = 1
        while aside.exists():
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
            counter += 1
        try:
            path.rename(aside)
        except OSError as error:
            logger.error(f"❌ [CLOUD-SYNC] Could not move {path} aside ({error.strerror})")
        else:
            logger.warning(f"⚠️ [CLOUD-SYNC] Kept the corrupt sync state as {aside}")

    def _read_provenance_files(self) -> dict[str, Provenance]:
        return self._records.all_provenance()
