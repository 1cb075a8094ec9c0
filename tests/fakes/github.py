"""A fake of GitHub's Actions REST API, served by aiohttp on 127.0.0.1, for the tests.

It keeps a tiny in-memory model (one repository, its workflows, runs and artifacts) and answers
the endpoints the client uses with JSON shaped as GitHub's OpenAPI description requires (checked
by ``tests/test_github_fake_conformance.py``). Like GitHub it paginates with absolute ``Link``
URLs, tags every answer with a strong ``ETag`` and answers 304 to a matching ``If-None-Match``
without charging the rate limit, and redirects artifact downloads to a signed URL on a separate
blob host (``tests/fakes/blobhost.py``, served on 127.0.0.2). Tests inject faults per endpoint.

Use it through ``running_fake_github()``::

    async with running_fake_github() as github:
        run = github.add_run()
        github.add_artifact(run, content=make_zip({"unified_brain.onnx": b"..."}))
        client = GitHubActionsClient(session, github.settings())

The JSON bodies it answers with, and the ``workflow_run`` webhook delivery GitHub would send for
one of its runs (``workflow_run_payload``, ``webhook_signature``, ``delivery_headers``, imported
from here too), are built in ``tests/fakes/github_payloads.py``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
import zipfile
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from yarl import URL

from app.settings import GitHubSettings
from tests.fakes.blobhost import BlobRequest, FakeBlobHost
from tests.fakes.github_payloads import (
    artifact_json,
    delivery_headers,
    run_json,
    webhook_signature,
    workflow_run_payload,
)

# The public names; the webhook builders live in github_payloads and are re-exported here.
__all__ = [
    "DOWNLOAD_ARTIFACT",
    "GET_ARTIFACT",
    "GET_RUN",
    "LIST_ARTIFACTS",
    "LIST_RUNS",
    "FakeArtifact",
    "FakeGitHub",
    "FakeRun",
    "FakeWorkflow",
    "RecordedRequest",
    "delivery_headers",
    "make_zip",
    "running_fake_github",
    "webhook_signature",
    "workflow_run_payload",
]

# Endpoint names, used to count requests and to aim injected faults.
LIST_RUNS: Final = "list_runs"
GET_RUN: Final = "get_run"
LIST_ARTIFACTS: Final = "list_artifacts"
GET_ARTIFACT: Final = "get_artifact"
DOWNLOAD_ARTIFACT: Final = "download_artifact"

DOCS_URL = "https://docs.github.com/rest"
RATE_LIMIT = 5000
# Run statuses; any other value of the `status` filter is a conclusion (success, failure, ...).
RUN_STATUSES = frozenset({"completed", "in_progress", "queued", "requested", "waiting", "pending"})
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

_Item = TypeVar("_Item")


class _Computed:
    """Marker: derive the artifact's digest from its bytes."""


COMPUTED = _Computed()


def make_zip(files: Mapping[str, bytes]) -> bytes:
    """A zip archive holding ``files`` (member name -> bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass(slots=True)
class FakeWorkflow:
    id: int
    name: str
    path: str  # ".github/workflows/train.yml"


@dataclass(slots=True)
class FakeArtifact:
    id: int
    run_id: int
    name: str
    content: bytes
    digest: str | None
    expired: bool
    created_at: datetime
    declared_size: int | None = None  # what `size_in_bytes` says; None: the content's length


@dataclass(slots=True)
class FakeRun:
    id: int
    workflow: FakeWorkflow
    head_branch: str | None
    head_sha: str
    event: str
    status: str
    conclusion: str | None
    created_at: datetime
    run_attempt: int
    repository: str
    head_repository: str  # differs from `repository` for a fork
    artifacts: list[FakeArtifact] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the API received, as the tests may want to inspect it."""

    endpoint: str | None
    url: URL
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Fault:
    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeGitHub:
    """The fake's model, its counters and its fault switches; ``api_app()`` serves it."""

    def __init__(
        self,
        *,
        token: str = "ghp_fake_token_0123456789abcdef",
        owner: str = "octo-org",
        repository: str = "trading-models",
        url_ttl: float = 60.0,
    ) -> None:
        self.token = token
        self.owner = owner
        self.repository = repository
        self.full_name = f"{owner}/{repository}"
        self.api_url = ""  # set once the server is listening
        self.blob = FakeBlobHost(url_ttl=url_ttl)
        self.workflows: list[FakeWorkflow] = []
        self.runs: dict[int, FakeRun] = {}
        self.artifacts: dict[int, FakeArtifact] = {}
        self.requests: Counter[str] = Counter()  # every request, per endpoint
        self.counted_requests = 0  # requests charged against the rate limit
        self.recorded: list[RecordedRequest] = []
        self.rate_limit_remaining = RATE_LIMIT
        self.rate_limit_reset = int(time.time()) + 3600
        self._ids = itertools.count(1001)
        self._faults: dict[str, deque[_Fault]] = {}
        self._token_revoked = False
        # Hostile behaviours (issue 8): what a compromised or broken server might answer.
        self.reset_header: str | None = None  # sent as x-ratelimit-reset instead of the real one
        self.download_location: str | None = None  # where downloads redirect instead
        self.empty_pages_forever = False  # run listings: empty pages that always link a next
        self.next_link: str | None = None  # run listings: this Link rel="next", whatever it is
        self.endless_listing = False  # run listings: a JSON body that never ends

    # -- the model ---------------------------------------------------------------------------

    @property
    def blob_requests(self) -> list[BlobRequest]:
        """Every request the blob host received."""
        return list(self.blob.requests)

    def settings(self, **overrides: Any) -> GitHubSettings:
        """Client settings pointing at this fake, with its valid token."""
        values: dict[str, Any] = {
            "owner": self.owner,
            "repository": self.repository,
            "token": SecretStr(self.token),
            "api_url": self.api_url,
            **overrides,
        }
        return GitHubSettings(**values)

    def add_workflow(
        self, file_name: str = "train.yml", name: str = "Train models"
    ) -> FakeWorkflow:
        workflow = FakeWorkflow(next(self._ids), name, f".github/workflows/{file_name}")
        self.workflows.append(workflow)
        return workflow

    def add_run(
        self,
        workflow: FakeWorkflow | None = None,
        *,
        head_branch: str | None = "main",
        head_sha: str | None = None,
        event: str = "push",
        status: str = "completed",
        conclusion: str | None = "success",
        created_at: datetime | None = None,
        run_attempt: int = 1,
        head_repository: str | None = None,
    ) -> FakeRun:
        """A run; later runs are newer unless ``created_at`` says otherwise."""
        workflow = workflow or (self.workflows[0] if self.workflows else self.add_workflow())
        run_id = next(self._ids)
        run = FakeRun(
            id=run_id,
            workflow=workflow,
            head_branch=head_branch,
            head_sha=head_sha or hashlib.sha1(str(run_id).encode()).hexdigest(),
            event=event,
            status=status,
            conclusion=conclusion,
            created_at=created_at or EPOCH + timedelta(minutes=run_id),
            run_attempt=run_attempt,
            repository=self.full_name,
            head_repository=head_repository or self.full_name,
        )
        self.runs[run_id] = run
        return run

    def add_artifact(
        self,
        run: FakeRun,
        name: str = "trained-model",
        content: bytes = b"PK\x05\x06" + bytes(18),  # an empty zip
        *,
        digest: str | _Computed | None = COMPUTED,
        expired: bool = False,
    ) -> FakeArtifact:
        """An artifact of ``run``; its digest is the SHA-256 of ``content`` unless given."""
        if isinstance(digest, _Computed):
            digest = "sha256:" + hashlib.sha256(content).hexdigest()
        artifact = FakeArtifact(
            id=next(self._ids),
            run_id=run.id,
            name=name,
            content=content,
            digest=digest,
            expired=expired,
            created_at=run.created_at + timedelta(minutes=1),
        )
        run.artifacts.append(artifact)
        self.artifacts[artifact.id] = artifact
        return artifact

    # -- fault switches ----------------------------------------------------------------------

    def fail_next(self, endpoint: str, times: int = 1, status: int = 502) -> None:
        """The next ``times`` requests to ``endpoint`` get a 5xx."""
        for _ in range(times):
            self._inject(endpoint, _Fault(status, "Server Error"))

    def limit_next(self, endpoint: str, *, status: int = 429, retry_after: int = 30) -> None:
        """The next request to ``endpoint`` hits a secondary rate limit (403 or 429)."""
        message = "You have exceeded a secondary rate limit. Please wait a few minutes."
        self._inject(endpoint, _Fault(status, message, {"retry-after": str(retry_after)}))

    def exhaust_rate_limit(self, reset_in: int = 60) -> None:
        """Use up the primary rate limit until ``reset_in`` seconds from now."""
        self.rate_limit_remaining = 0
        self.rate_limit_reset = int(time.time()) + reset_in

    def revoke_token(self) -> None:
        """From now on even the configured token is refused (401 Bad credentials)."""
        self._token_revoked = True

    def expire(self, artifact: FakeArtifact) -> None:
        """The artifact passes its retention: still listed, but downloads answer 410."""
        artifact.expired = True

    def drop_next_download(self, after_bytes: int) -> None:
        """The blob host cuts the next download after ``after_bytes`` bytes."""
        self.blob.drop_next_download(after_bytes)

    def _inject(self, endpoint: str, fault: _Fault) -> None:
        self._faults.setdefault(endpoint, deque()).append(fault)

    # -- the HTTP application ----------------------------------------------------------------

    def api_app(self) -> web.Application:
        """The API as an aiohttp application."""
        app = web.Application(middlewares=[self._middleware])
        repo = "/repos/{owner}/{repo}/actions"
        # A route's name is its endpoint, with a ".variant" suffix where two paths share one.
        app.router.add_get(f"{repo}/runs", self._list_runs, name=LIST_RUNS)
        app.router.add_get(
            f"{repo}/workflows/{{workflow_id}}/runs", self._list_runs, name=f"{LIST_RUNS}.workflow"
        )
        app.router.add_get(f"{repo}/runs/{{run_id:\\d+}}", self._get_run, name=GET_RUN)
        app.router.add_get(
            f"{repo}/runs/{{run_id:\\d+}}/artifacts", self._list_artifacts, name=LIST_ARTIFACTS
        )
        app.router.add_get(
            f"{repo}/artifacts/{{artifact_id:\\d+}}", self._get_artifact, name=GET_ARTIFACT
        )
        app.router.add_get(
            f"{repo}/artifacts/{{artifact_id:\\d+}}/zip", self._download, name=DOWNLOAD_ARTIFACT
        )
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route_name = request.match_info.route.name
        endpoint = route_name.split(".")[0] if route_name else None
        self.recorded.append(RecordedRequest(endpoint, request.url, dict(request.headers)))
        if endpoint is not None:
            self.requests[endpoint] += 1
        response = self._refusal(request, endpoint) or await handler(request)
        response = _conditional(request, response)
        if response.status != 304:  # as on GitHub, a 304 costs nothing
            self.counted_requests += 1
            self.rate_limit_remaining = max(0, self.rate_limit_remaining - 1)
        response.headers.update(self._rate_limit_headers())
        return response

    def _refusal(self, request: web.Request, endpoint: str | None) -> web.Response | None:
        """The error answer that precedes the handler, if any: auth, injected fault, limit."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if (
            scheme.lower() not in {"bearer", "token"}
            or credentials != self.token
            or self._token_revoked
        ):
            return _error(401, "Bad credentials")
        faults = self._faults.get(endpoint or "")
        if faults:
            fault = faults.popleft()
            return _error(fault.status, fault.message, fault.headers)
        if self.rate_limit_remaining == 0:
            if time.time() < self.rate_limit_reset:
                return _error(403, "API rate limit exceeded for user ID 1.")
            self.rate_limit_remaining = RATE_LIMIT
            self.rate_limit_reset = int(time.time()) + 3600
        return None

    def _rate_limit_headers(self) -> dict[str, str]:
        reset = self.reset_header if self.reset_header is not None else str(self.rate_limit_reset)
        return {
            "x-ratelimit-limit": str(RATE_LIMIT),
            "x-ratelimit-remaining": str(self.rate_limit_remaining),
            "x-ratelimit-reset": reset,
            "x-ratelimit-used": str(RATE_LIMIT - self.rate_limit_remaining),
            "x-ratelimit-resource": "core",
        }

    def _ours(self, request: web.Request) -> bool:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        return f"{owner}/{repo}".lower() == self.full_name.lower()

    async def _list_runs(self, request: web.Request) -> web.StreamResponse:
        if not self._ours(request):
            return _error(404, "Not Found")
        if self.empty_pages_forever:
            page = _int(request.query.get("page"), 1)
            link = f'<{request.url.update_query(page=str(page + 1))}>; rel="next"'
            return web.json_response(
                {"total_count": 0, "workflow_runs": []}, headers={"Link": link}
            )
        if self.endless_listing:
            return await _endless_listing(request)
        if self.next_link is not None:
            link = f'<{self.next_link}>; rel="next"'
            return web.json_response(
                {"total_count": 0, "workflow_runs": []}, headers={"Link": link}
            )
        runs = list(self.runs.values())
        if "workflow_id" in request.match_info:
            workflow = self._workflow(request.match_info["workflow_id"])
            if workflow is None:
                return _error(404, "Not Found")
            runs = [run for run in runs if run.workflow is workflow]
        runs = [run for run in runs if _run_matches(run, request.query)]
        runs.sort(key=lambda run: (run.created_at, run.id), reverse=True)
        page, link = _paginate(request, runs)
        base = request.url.origin()
        body = {"total_count": len(runs), "workflow_runs": [run_json(base, run) for run in page]}
        return web.json_response(body, headers=link)

    def _workflow(self, workflow_id: str) -> FakeWorkflow | None:
        for workflow in self.workflows:
            if workflow_id in {str(workflow.id), workflow.path.rsplit("/", 1)[-1]}:
                return workflow
        return None

    async def _get_run(self, request: web.Request) -> web.Response:
        run = self.runs.get(int(request.match_info["run_id"]))
        if run is None or not self._ours(request):
            return _error(404, "Not Found")
        return web.json_response(run_json(request.url.origin(), run))

    async def _list_artifacts(self, request: web.Request) -> web.Response:
        run = self.runs.get(int(request.match_info["run_id"]))
        if run is None or not self._ours(request):
            return _error(404, "Not Found")
        name = request.query.get("name")
        artifacts = [a for a in reversed(run.artifacts) if name is None or a.name == name]
        page, link = _paginate(request, artifacts)
        base = request.url.origin()
        body = {
            "total_count": len(artifacts),
            "artifacts": [artifact_json(base, self.runs[a.run_id], a) for a in page],
        }
        return web.json_response(body, headers=link)

    async def _get_artifact(self, request: web.Request) -> web.Response:
        artifact = self.artifacts.get(int(request.match_info["artifact_id"]))
        if artifact is None or not self._ours(request):
            return _error(404, "Not Found")
        run = self.runs[artifact.run_id]
        return web.json_response(artifact_json(request.url.origin(), run, artifact))

    async def _download(self, request: web.Request) -> web.Response:
        artifact = self.artifacts.get(int(request.match_info["artifact_id"]))
        if artifact is None or not self._ours(request):
            return _error(404, "Not Found")
        if artifact.expired:
            return _error(410, "Artifact has expired")
        location = self.download_location or self.blob.signed_url(artifact.id, artifact.content)
        return web.Response(status=302, headers={"Location": location})


async def _endless_listing(request: web.Request) -> web.StreamResponse:
    """A 200 whose JSON listing goes on until the client hangs up."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"total_count": 1, "workflow_runs": [')
    item = b'{"id": 1, "name": "' + b"x" * 60_000 + b'"}, '
    try:
        while True:
            await response.write(item)
    except (ConnectionError, RuntimeError):  # the client went away
        pass
    return response


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
    return web.json_response(body, status=status, headers=headers)


def _conditional(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Tag a 200 JSON answer with its ETag; a 304 instead when the client already has it."""
    if response.status != 200 or not isinstance(response, web.Response):
        return response
    if not isinstance(response.body, bytes):
        return response
    etag = f'"{hashlib.sha256(response.body).hexdigest()}"'
    known = {
        tag.strip().removeprefix("W/")
        for tag in request.headers.get("If-None-Match", "").split(",")
    }
    if etag in known:
        return web.Response(status=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return response


def _run_matches(run: FakeRun, query: Mapping[str, str]) -> bool:
    status = query.get("status")
    if status is not None and status != (run.status if status in RUN_STATUSES else run.conclusion):
        return False
    if "branch" in query and run.head_branch != query["branch"]:
        return False
    if "event" in query and run.event != query["event"]:
        return False
    return "head_sha" not in query or run.head_sha == query["head_sha"]


def _paginate(request: web.Request, items: list[_Item]) -> tuple[list[_Item], dict[str, str]]:
    """One page of ``items`` and the ``Link`` header (absolute URLs) that goes with it."""
    per_page = min(max(_int(request.query.get("per_page"), 30), 1), 100)
    page = max(_int(request.query.get("page"), 1), 1)
    last = max((len(items) + per_page - 1) // per_page, 1)
    chosen = items[(page - 1) * per_page : page * per_page]
    if last == 1:
        return chosen, {}
    relations = {"prev": page - 1, "next": page + 1, "last": last, "first": 1}
    shown = {rel: number for rel, number in relations.items() if 1 <= number <= last}
    if page >= last:
        shown.pop("next", None)
        shown.pop("last", None)
    if page == 1:
        shown.pop("prev", None)
        shown.pop("first", None)
    links = [f'<{request.url.update_query(page=str(n))}>; rel="{rel}"' for rel, n in shown.items()]
    return chosen, {"Link": ", ".join(links)}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@asynccontextmanager
async def running_fake_github(**options: Any) -> AsyncIterator[FakeGitHub]:
    """A ``FakeGitHub`` served on 127.0.0.1, its blob host on 127.0.0.2; both stop on exit."""
    github = FakeGitHub(**options)
    async with (
        TestServer(github.api_app(), host="127.0.0.1") as api,
        TestServer(github.blob.app(), host="127.0.0.2") as blob,
    ):
        github.api_url = str(api.make_url("")).rstrip("/")
        github.blob.base_url = str(blob.make_url("")).rstrip("/")
        yield github
