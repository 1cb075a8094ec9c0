"""Payloads GitHub sends, built from the fake's model: pure functions, no server.

REST bodies shaped as GitHub's schemas ``workflow-run`` and ``artifact`` require (checked by
``tests/test_github_fake_conformance.py``), which ``tests/fakes/github.py`` answers with; and the
``workflow_run`` webhook delivery GitHub would send for one of the fake's runs, with its
signature and headers.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from yarl import URL

if TYPE_CHECKING:  # the fake imports this module to answer with these bodies
    from tests.fakes.github import FakeArtifact, FakeGitHub, FakeRun


# -- JSON bodies, shaped as GitHub's schemas `workflow-run` and `artifact` require ---------------

_REPOSITORY_URLS = {
    "archive_url": "/{archive_format}{/ref}",
    "assignees_url": "/assignees{/user}",
    "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}",
    "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}",
    "commits_url": "/commits{/sha}",
    "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}",
    "contributors_url": "/contributors",
    "deployments_url": "/deployments",
    "downloads_url": "/downloads",
    "events_url": "/events",
    "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks",
    "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}",
    "keys_url": "/keys{/key_id}",
    "labels_url": "/labels{/name}",
    "languages_url": "/languages",
    "merges_url": "/merges",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}",
    "stargazers_url": "/stargazers",
    "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "tags_url": "/tags",
    "teams_url": "/teams",
    "trees_url": "/git/trees{/sha}",
}
_USER_URLS = {
    "events_url": "/events{/privacy}",
    "followers_url": "/followers",
    "following_url": "/following{/other_user}",
    "gists_url": "/gists{/gist_id}",
    "organizations_url": "/orgs",
    "received_events_url": "/received_events",
    "repos_url": "/repos",
    "starred_url": "/starred{/owner}{/repo}",
    "subscriptions_url": "/subscriptions",
}


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _stable_id(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _user_json(base: URL, login: str) -> dict[str, Any]:
    user_id = _stable_id(login)
    url = f"{base}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": f"U_{user_id}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": url,
        "html_url": f"https://github.com/{login}",
        "type": "Organization",
        "site_admin": False,
        **{key: url + suffix for key, suffix in _USER_URLS.items()},
    }


def _repository_json(base: URL, full_name: str) -> dict[str, Any]:
    owner, name = full_name.split("/")
    repository_id = _stable_id(full_name)
    url = f"{base}/repos/{full_name}"
    return {
        "id": repository_id,
        "node_id": f"R_{repository_id}",
        "name": name,
        "full_name": full_name,
        "owner": _user_json(base, owner),
        "private": True,
        "html_url": f"https://github.com/{full_name}",
        "description": None,
        "fork": False,
        "url": url,
        **{key: url + suffix for key, suffix in _REPOSITORY_URLS.items()},
    }


def run_json(base: URL, run: FakeRun) -> dict[str, Any]:
    url = f"{base}/repos/{run.repository}/actions/runs/{run.id}"
    created = _timestamp(run.created_at)
    actor = _user_json(base, run.head_repository.split("/")[0])
    return {
        "id": run.id,
        "name": run.workflow.name,
        "node_id": f"WFR_{run.id}",
        "check_suite_id": run.id * 10,
        "check_suite_node_id": f"CS_{run.id * 10}",
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "path": run.workflow.path,
        "display_title": f"{run.workflow.name} #{run.id}",
        "run_number": run.id - 1000,
        "run_attempt": run.run_attempt,
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": run.workflow.id,
        "url": url,
        "html_url": f"https://github.com/{run.repository}/actions/runs/{run.id}",
        "pull_requests": [],  # GitHub leaves this empty for runs from forks
        "created_at": created,
        "updated_at": created,
        "run_started_at": created,
        "actor": actor,
        "triggering_actor": actor,
        "referenced_workflows": [],
        "jobs_url": f"{url}/jobs",
        "logs_url": f"{url}/logs",
        "check_suite_url": f"{base}/repos/{run.repository}/check-suites/{run.id * 10}",
        "artifacts_url": f"{url}/artifacts",
        "cancel_url": f"{url}/cancel",
        "rerun_url": f"{url}/rerun",
        "previous_attempt_url": f"{url}/attempts/{run.run_attempt - 1}"
        if run.run_attempt > 1
        else None,
        "workflow_url": f"{base}/repos/{run.repository}/actions/workflows/{run.workflow.id}",
        "head_commit": {
            "id": run.head_sha,
            "tree_id": hashlib.sha1(run.head_sha.encode()).hexdigest(),
            "message": "Retrain models",
            "timestamp": created,
            "author": {"name": "Trainer", "email": "trainer@example.com"},
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
        },
        "repository": _repository_json(base, run.repository),
        "head_repository": _repository_json(base, run.head_repository),
        "head_repository_id": _stable_id(run.head_repository),
    }


def artifact_json(base: URL, run: FakeRun, artifact: FakeArtifact) -> dict[str, Any]:
    url = f"{base}/repos/{run.repository}/actions/artifacts/{artifact.id}"
    return {
        "id": artifact.id,
        "node_id": f"MDg6QXJ0aWZhY3Q{artifact.id}",
        "name": artifact.name,
        "size_in_bytes": (
            len(artifact.content) if artifact.declared_size is None else artifact.declared_size
        ),
        "url": url,
        "archive_download_url": f"{url}/zip",
        "expired": artifact.expired,
        "created_at": _timestamp(artifact.created_at),
        "updated_at": _timestamp(artifact.created_at),
        "expires_at": _timestamp(artifact.created_at + timedelta(days=90)),
        "digest": artifact.digest,
        "workflow_run": {
            "id": run.id,
            "repository_id": _stable_id(run.repository),
            "head_repository_id": _stable_id(run.head_repository),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
        },
    }


# -- webhook deliveries, as GitHub sends them ---------------------------------------------------


def workflow_run_payload(
    fake: FakeGitHub, run: FakeRun, *, repository: str | None = None, **run_changes: Any
) -> dict[str, Any]:
    """A ``workflow_run`` delivery as GitHub sends it (the fields this project reads, and a
    few it does not), for `run` of the fake; `run_changes` overwrite workflow_run fields."""
    full_name = repository or fake.full_name
    workflow_run: dict[str, Any] = {
        "id": run.id,
        "name": run.workflow.name,
        "run_attempt": run.run_attempt,
        "head_branch": run.head_branch,
        "head_sha": run.head_sha,
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": run.workflow.id,
        "path": run.workflow.path,
        "repository": {"full_name": full_name},
        "head_repository": {"full_name": run.head_repository},
    }
    for key, change in run_changes.items():
        workflow_run[key] = {"full_name": change} if key == "head_repository" else change
    return {
        "action": "completed",
        "workflow_run": workflow_run,
        "workflow": {"id": run.workflow.id, "path": run.workflow.path},
        "repository": {"full_name": full_name},
        "sender": {"login": "octocat"},
    }


def webhook_signature(body: bytes, secret: str | bytes) -> str:
    """The ``X-Hub-Signature-256`` GitHub sends with `body` for a hook whose secret is `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def delivery_headers(
    *, event: str = "workflow_run", delivery: str | None = None, signature: str | None = None
) -> dict[str, str]:
    """The headers of a JSON webhook delivery; unsigned when `signature` is None."""
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/044aadd",
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return headers
