"""Plain data read from GitHub's Actions API: workflow runs and their artifacts.

Only the fields this project decides on are kept. Parsing is strict about what it needs and
lenient about the rest, so a new field in GitHub's answer never breaks a sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)  # 3.11 reads the trailing Z


def _full_name(repository: Any) -> str | None:
    if isinstance(repository, dict):
        name = repository.get("full_name")
        return name if isinstance(name, str) else None
    return None


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One run of a workflow (``GET /repos/{owner}/{repo}/actions/runs``)."""

    id: int
    run_attempt: int
    name: str
    workflow_id: int
    path: str
    head_branch: str | None
    head_sha: str
    event: str
    status: str | None
    conclusion: str | None
    created_at: datetime | None
    repository: str | None
    head_repository: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> WorkflowRun:
        return cls(
            id=int(data["id"]),
            run_attempt=int(data.get("run_attempt") or 1),
            name=str(data.get("name") or ""),
            workflow_id=int(data.get("workflow_id") or 0),
            path=str(data.get("path") or ""),
            head_branch=data.get("head_branch"),
            head_sha=str(data.get("head_sha") or ""),
            event=str(data.get("event") or ""),
            status=data.get("status"),
            conclusion=data.get("conclusion"),
            created_at=_timestamp(data.get("created_at")),
            repository=_full_name(data.get("repository")),
            head_repository=_full_name(data.get("head_repository")),
        )


@dataclass(frozen=True, slots=True)
class Artifact:
    """One workflow artifact (``GET .../actions/runs/{run_id}/artifacts``)."""

    id: int
    name: str
    size_in_bytes: int
    expired: bool
    digest: str | None
    created_at: datetime | None
    archive_download_url: str
    workflow_run_id: int | None
    head_branch: str | None
    head_sha: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Artifact:
        run = data.get("workflow_run") or {}
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            size_in_bytes=int(data.get("size_in_bytes") or 0),
            expired=bool(data.get("expired")),
            digest=data.get("digest"),
            created_at=_timestamp(data.get("created_at")),
            archive_download_url=str(data.get("archive_download_url") or ""),
            workflow_run_id=run.get("id"),
            head_branch=run.get("head_branch"),
            head_sha=run.get("head_sha"),
        )

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 GitHub declares for the zip, or None for old artifacts."""
        if self.digest and self.digest.startswith("sha256:"):
            return self.digest.removeprefix("sha256:").lower()
        return None


# What `from_api` reads, and nothing more: cached pages stay small (a raw run is several KB).
_KEPT: dict[str, tuple[str, ...] | None] = {
    "id": None,
    "run_attempt": None,
    "name": None,
    "workflow_id": None,
    "path": None,
    "head_branch": None,
    "head_sha": None,
    "event": None,
    "status": None,
    "conclusion": None,
    "created_at": None,
    "repository": ("full_name",),
    "head_repository": ("full_name",),
    "size_in_bytes": None,
    "expired": None,
    "digest": None,
    "archive_download_url": None,
    "workflow_run": ("id", "head_branch", "head_sha"),
}


def compact_api_item(item: dict[str, Any]) -> dict[str, Any]:
    """A run or artifact object with only the fields this project reads."""
    compact: dict[str, Any] = {}
    for key, nested in _KEPT.items():
        if key not in item:
            continue
        value = item[key]
        if nested is not None and isinstance(value, dict):
            value = {k: value[k] for k in nested if k in value}
        compact[key] = value
    return compact


@dataclass(frozen=True, slots=True)
class CachedPage:
    """One listing page as last seen: its ETag, its items (raw JSON objects), its next link."""

    etag: str
    items: tuple[dict[str, Any], ...]
    next_url: str | None


class ETagCache(Protocol):
    """Where the GitHub client keeps pages for conditional requests (persisted by the state)."""

    def get(self, url: str) -> CachedPage | None: ...

    def put(self, url: str, page: CachedPage) -> None: ...
