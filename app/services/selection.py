"""Which workflow run may supply a model, and which of its artifacts to install next.

Pure functions over :mod:`app.services.github_types`: no network, no files, no model runtime, so
every rule is tested on plain data. Each rule answers with a short reason, because "why was this
artifact not installed?" is the first question a user asks.

Ordering assumes GitHub run ids increase monotonically over time (they are allocated from one
global sequence), so a larger run id is a newer run; a re-run keeps its id and raises
``run_attempt``; and of two artifacts of one attempt the larger id was uploaded later.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from app.services.github_types import Artifact, WorkflowRun
    from app.settings import GitHubSettings

# Runs of these events execute the pull request's code, which can be anyone's.
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})

RunKey = tuple[int, int]  # (run id, run attempt)


@dataclass(frozen=True)
class SelectionPolicy:
    """Which runs and artifacts may supply a model (the ``github.*`` settings)."""

    repository: str
    branch: str
    workflow: str
    allowed_events: frozenset[str]
    allow_pull_requests: bool
    allow_forks: bool
    artifact_pattern: str

    @classmethod
    def from_settings(cls, github: GitHubSettings) -> SelectionPolicy:
        return cls(
            repository=github.full_name,
            branch=github.branch,
            workflow=github.workflow,
            allowed_events=frozenset(github.allowed_events),
            allow_pull_requests=github.allow_pull_requests,
            allow_forks=github.allow_forks,
            artifact_pattern=github.artifact_pattern,
        )


def _workflow_file(path: str) -> str:
    # Runs of reusable or dynamic workflows can carry a ref suffix: "x.yml@refs/heads/main".
    return PurePosixPath(path.partition("@")[0]).name


def _workflow_matches(run: WorkflowRun, workflow: str) -> bool:
    if workflow.isdigit():
        return int(workflow) == run.workflow_id
    return _workflow_file(workflow) == _workflow_file(run.path)


def _why_event_refused(run: WorkflowRun, policy: SelectionPolicy) -> str | None:
    if run.event in PULL_REQUEST_EVENTS:
        if policy.allow_pull_requests:
            return None
        return f"event {run.event!r} is refused (github.allow_pull_requests is off)"
    if run.event in policy.allowed_events:
        return None
    allowed = ", ".join(sorted(policy.allowed_events)) or "none"
    return f"event {run.event!r} is not allowed (allowed: {allowed})"


def _why_repository_refused(run: WorkflowRun, policy: SelectionPolicy) -> str | None:
    if policy.allow_forks:
        return None
    if run.head_repository is None:
        return "head repository unknown, refused as a possible fork (github.allow_forks is off)"
    if run.head_repository.casefold() != policy.repository.casefold():
        return f"run is from fork {run.head_repository!r}, not {policy.repository!r}"
    return None


def why_run_ineligible(run: WorkflowRun, policy: SelectionPolicy) -> str | None:
    """Why ``run`` may not supply a model, or None when it may."""
    if run.status != "completed":
        return f"run is {run.status or 'in an unknown state'}, not completed"
    if run.conclusion != "success":
        return f"run concluded {run.conclusion or 'without a conclusion'}, not success"
    if policy.branch and run.head_branch != policy.branch:
        return f"branch {run.head_branch!r} is not {policy.branch!r}"
    if policy.workflow and not _workflow_matches(run, policy.workflow):
        shown = run.path or f"id {run.workflow_id}"
        return f"workflow {shown} is not {policy.workflow!r}"
    return _why_event_refused(run, policy) or _why_repository_refused(run, policy)


def artifact_matches(artifact: Artifact, policy: SelectionPolicy) -> bool:
    """Whether the artifact's name matches the glob ``github.artifact_pattern`` (case-sensitive).

    An empty pattern matches every name.
    """
    return fnmatchcase(artifact.name, policy.artifact_pattern or "*")


@dataclass(frozen=True)
class ArtifactCandidate:
    """An artifact of an eligible run, which may become the installed model."""

    run: WorkflowRun
    artifact: Artifact

    def __post_init__(self) -> None:
        # Pairing an artifact with the wrong run would give it that run's age and provenance.
        owner = self.artifact.workflow_run_id
        if owner is not None and owner != self.run.id:
            raise ValueError(
                f"artifact {self.artifact.id} belongs to run {owner}, not run {self.run.id}"
            )

    @property
    def run_key(self) -> RunKey:
        """(run id, run attempt): how provenance records the run a model came from."""
        return (self.run.id, self.run.run_attempt)

    @property
    def key(self) -> tuple[int, int, int]:
        """Sort key, larger is newer: (run id, run attempt, artifact id); see the module doc."""
        return (self.run.id, self.run.run_attempt, self.artifact.id)


def why_artifact_skipped(
    candidate: ArtifactCandidate,
    *,
    processed_ids: Collection[int],
    installed: RunKey | None,
) -> str | None:
    """Why ``candidate`` is not to be installed, or None when it may be.

    ``installed`` is the (run id, run attempt) of the model in service, None when it did not come
    from a workflow run (embedded, inbox): then any run is newer.
    """
    if candidate.artifact.expired:
        return "artifact expired"
    if candidate.artifact.id in processed_ids:
        return "already processed"
    if installed is not None and candidate.run_key <= installed:
        run_id, attempt = installed
        return f"not newer than the installed model (run {run_id} attempt {attempt})"
    return None


def choose_candidate(
    candidates: Iterable[ArtifactCandidate],
    *,
    processed_ids: Collection[int],
    installed: RunKey | None,
) -> tuple[ArtifactCandidate | None, list[tuple[ArtifactCandidate, str]]]:
    """The newest acceptable candidate, and every other one with the reason it was passed over.

    Skipped candidates come newest first. Each input appears once in the answer: as the choice,
    or skipped (a duplicate listing, a reason of its own, or superseded by the choice).
    """
    chosen: ArtifactCandidate | None = None
    skipped: list[tuple[ArtifactCandidate, str]] = []
    seen: set[tuple[int, int, int]] = set()
    for candidate in sorted(candidates, key=lambda each: each.key, reverse=True):
        if candidate.key in seen:
            # Listings are paginated while runs are added, so one artifact can be listed twice.
            skipped.append((candidate, "listed twice"))
            continue
        seen.add(candidate.key)
        if chosen is not None:
            skipped.append((candidate, f"superseded by newer artifact {chosen.artifact.id}"))
            continue
        reason = why_artifact_skipped(candidate, processed_ids=processed_ids, installed=installed)
        if reason is None:
            chosen = candidate
        else:
            skipped.append((candidate, reason))
    return chosen, skipped
