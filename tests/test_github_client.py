"""GitHubActionsClient against the fake GitHub (127.0.0.1) and its blob host (127.0.0.2)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from app.errors import (
    ArtifactError,
    ArtifactExpired,
    AuthenticationError,
    ChecksumMismatch,
    InsufficientDiskSpace,
    RateLimited,
    UpstreamError,
)
from app.services import github as github_module
from app.services.github import GitHubActionsClient, upstream_error
from app.services.github_types import Artifact, CachedPage, WorkflowRun
from tests.fakes.github import (
    DOWNLOAD_ARTIFACT,
    GET_RUN,
    LIST_ARTIFACTS,
    LIST_RUNS,
    FakeGitHub,
    FakeRun,
    make_zip,
)

MiB = 1024 * 1024


class MemoryETagCache:
    """ETagCache kept in a dict, as the persistent one keeps it on disk."""

    def __init__(self) -> None:
        self.pages: dict[str, CachedPage] = {}

    def get(self, url: str) -> CachedPage | None:
        return self.pages.get(url)

    def put(self, url: str, page: CachedPage) -> None:
        self.pages[url] = page


@pytest.fixture
def github(fake: FakeGitHub) -> FakeGitHub:
    """This module's name for the shared fake GitHub."""
    return fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def cache() -> MemoryETagCache:
    return MemoryETagCache()


@pytest.fixture
def make_client(
    github: FakeGitHub, session: aiohttp.ClientSession, cache: MemoryETagCache
) -> Callable[..., GitHubActionsClient]:
    def make(**settings: object) -> GitHubActionsClient:
        return GitHubActionsClient(session, github.settings(**settings), etag_cache=cache)

    return make


def add_runs(github: FakeGitHub, count: int) -> list[FakeRun]:
    """``count`` successful push runs on main, oldest first."""
    return [github.add_run() for _ in range(count)]


async def all_runs(client: GitHubActionsClient) -> list[WorkflowRun]:
    return [run async for run in client.iter_runs()]


def assert_no_secrets(error: BaseException, github: FakeGitHub) -> None:
    """Neither the token nor a signed URL's query string may appear in an error message."""
    for text in (str(error), repr(error)):
        assert github.token not in text
        assert "sig=" not in text
        assert "exp=" not in text


# -- listing -----------------------------------------------------------------------------------


async def test_runs_come_newest_first_across_pages_by_following_link(github, make_client):
    runs = add_runs(github, 7)
    client = make_client(per_page=3)

    listed = await all_runs(client)

    assert [run.id for run in listed] == [run.id for run in reversed(runs)]
    assert github.requests[LIST_RUNS] == 3
    pages = [request.url for request in github.recorded]
    assert [url.query.get("page") for url in pages] == [None, "2", "3"]
    assert all(url.query["per_page"] == "3" for url in pages)  # kept by the server's Link URLs
    assert client.requests_sent == 3


async def test_runs_are_asked_for_with_the_configured_filters(github, make_client):
    train = github.add_workflow("train.yml")
    other = github.add_workflow("lint.yml")
    wanted = github.add_run(train)
    github.add_run(other)
    github.add_run(train, head_branch="develop")
    github.add_run(train, conclusion="failure")
    github.add_run(train, status="in_progress", conclusion=None)

    listed = await all_runs(make_client(workflow="train.yml", branch="main"))

    assert [run.id for run in listed] == [wanted.id]
    (request,) = github.recorded
    assert request.url.path == f"/repos/{github.full_name}/actions/workflows/train.yml/runs"
    assert dict(request.url.query) == {"status": "success", "per_page": "100", "branch": "main"}


async def test_runs_of_a_numeric_workflow_id_and_of_the_whole_repository(github, make_client):
    train = github.add_workflow("train.yml")
    run = github.add_run(train)
    other = github.add_run(github.add_workflow("nightly.yml"))

    by_id = await all_runs(make_client(workflow=str(train.id)))
    repo_wide = await all_runs(make_client(workflow=""))

    assert [r.id for r in by_id] == [run.id]
    assert [r.id for r in repo_wide] == [other.id, run.id]
    assert github.recorded[-1].url.path == f"/repos/{github.full_name}/actions/runs"


async def test_iterating_runs_is_lazy(github, make_client):
    add_runs(github, 5)
    client = make_client(per_page=2)

    async for _run in client.iter_runs():
        break

    assert github.requests[LIST_RUNS] == 1


async def test_run_fields_are_read_including_a_forks_head_repository(github, make_client):
    fork = github.add_run(event="pull_request", head_repository="mallory/trading-models")

    run = await make_client().get_run(fork.id)

    assert run.id == fork.id
    assert run.event == "pull_request"
    assert run.head_sha == fork.head_sha
    assert run.conclusion == "success"
    assert run.repository == github.full_name
    assert run.head_repository == "mallory/trading-models"
    assert run.path == ".github/workflows/train.yml"
    assert github.requests[GET_RUN] == 1


async def test_artifacts_of_a_run_come_from_every_page(github, make_client):
    run = github.add_run()
    fresh = github.add_artifact(run, "trained-model", b"zip-bytes")
    old = github.add_artifact(run, "legacy-model", digest=None)
    gone = github.add_artifact(run, "older-model", expired=True)
    for index in range(3):
        github.add_artifact(run, f"logs-{index}")

    artifacts = await make_client(per_page=2).list_artifacts(run.id)

    assert len(artifacts) == 6
    assert github.requests[LIST_ARTIFACTS] == 3
    by_id = {artifact.id: artifact for artifact in artifacts}
    assert by_id[fresh.id].sha256 == hashlib.sha256(b"zip-bytes").hexdigest()
    assert by_id[fresh.id].size_in_bytes == len(b"zip-bytes")
    assert by_id[fresh.id].workflow_run_id == run.id
    assert by_id[old.id].digest is None
    assert by_id[gone.id].expired


# -- conditional requests ---------------------------------------------------------------------


async def test_a_second_identical_poll_is_all_304_and_costs_no_rate_limit(
    github, make_client, cache
):
    add_runs(github, 5)
    client = make_client(per_page=2)
    first = await all_runs(client)
    counted = github.counted_requests

    second = await all_runs(client)

    assert second == first
    assert github.requests[LIST_RUNS] == 6
    assert github.counted_requests == counted  # 3 pages, all 304
    assert all(request.headers.get("If-None-Match") for request in github.recorded[3:])
    assert client.rate_limit_remaining == github.rate_limit_remaining
    assert len(cache.pages) == 3


async def test_a_new_run_shows_through_the_cache(github, make_client):
    add_runs(github, 3)
    client = make_client(per_page=2)
    await all_runs(client)
    newest = github.add_run()

    listed = await all_runs(client)

    assert listed[0].id == newest.id
    assert len(listed) == 4


async def test_artifact_listing_and_a_single_run_use_the_cache_too(github, make_client):
    run = github.add_run()
    for index in range(3):
        github.add_artifact(run, f"model-{index}")
    client = make_client(per_page=2)
    artifacts = await client.list_artifacts(run.id)
    got_run = await client.get_run(run.id)
    counted = github.counted_requests

    assert await client.list_artifacts(run.id) == artifacts
    assert await client.get_run(run.id) == got_run
    assert github.counted_requests == counted


async def test_without_a_cache_no_conditional_request_is_sent(github, session):
    add_runs(github, 2)
    client = GitHubActionsClient(session, github.settings())

    await all_runs(client)
    await all_runs(client)

    assert not any("If-None-Match" in request.headers for request in github.recorded)
    assert github.counted_requests == 2


# -- headers and the token ---------------------------------------------------------------------


async def test_api_requests_carry_githubs_headers_and_the_token(github, make_client, session):
    github.add_run()

    await all_runs(make_client())

    headers = github.recorded[0].headers
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert headers["User-Agent"]
    assert headers["Authorization"] == f"Bearer {github.token}"
    assert "Authorization" not in session.headers  # per request, never a session default


async def test_a_download_url_on_another_origin_never_gets_the_token(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run)
    (listed,) = await make_client().list_artifacts(run.id)
    elsewhere = dataclasses.replace(
        listed, archive_download_url=f"{github.blob.base_url}/artifacts/{listed.id}/zip"
    )

    with pytest.raises(UpstreamError) as raised:
        await make_client().download_artifact(elsewhere, tmp_path / "a.zip", max_bytes=MiB)

    assert raised.value.status == 403  # unsigned, so the blob host refused it
    assert len(github.blob.requests) == 1
    assert not github.blob.authorization_seen


# -- downloads ---------------------------------------------------------------------------------


async def only_artifact(client: GitHubActionsClient, run: FakeRun) -> Artifact:
    (artifact,) = await client.list_artifacts(run.id)
    return artifact


async def test_download_streams_to_the_file_and_returns_the_sha256(github, make_client, tmp_path):
    content = make_zip({"unified_brain.onnx": os.urandom(3 * MiB // 2)})
    run = github.add_run()
    github.add_artifact(run, content=content)
    client = make_client()
    artifact = await only_artifact(client, run)
    progress: list[int] = []
    destination = tmp_path / "artifact.zip"

    digest = await client.download_artifact(
        artifact, destination, max_bytes=4 * MiB, on_progress=progress.append
    )

    assert digest == hashlib.sha256(content).hexdigest()
    assert destination.read_bytes() == content
    assert progress == sorted(progress)
    assert progress[-1] == len(content)
    assert github.requests[DOWNLOAD_ARTIFACT] == 1
    assert github.recorded[-1].headers["Authorization"] == f"Bearer {github.token}"
    assert github.blob.downloads == 1
    assert not github.blob.authorization_seen


async def test_an_artifact_without_digest_is_accepted_on_its_computed_sha256(
    github, make_client, tmp_path
):
    run = github.add_run()
    github.add_artifact(run, content=b"old upload-artifact v3 zip", digest=None)
    client = make_client()

    digest = await client.download_artifact(
        await only_artifact(client, run), tmp_path / "a.zip", max_bytes=MiB
    )

    assert digest == hashlib.sha256(b"old upload-artifact v3 zip").hexdigest()


async def test_digest_mismatch_raises_and_leaves_no_file(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run, content=b"tampered", digest="sha256:" + "0" * 64)
    client = make_client()
    destination = tmp_path / "a.zip"

    with pytest.raises(ChecksumMismatch) as raised:
        await client.download_artifact(await only_artifact(client, run), destination, max_bytes=MiB)

    assert not destination.exists()
    assert "0" * 64 in str(raised.value)
    assert_no_secrets(raised.value, github)


async def test_an_artifact_that_expired_since_listing_answers_410(github, make_client, tmp_path):
    run = github.add_run()
    fake_artifact = github.add_artifact(run)
    client = make_client()
    artifact = await only_artifact(client, run)
    github.expire(fake_artifact)

    with pytest.raises(ArtifactExpired) as raised:
        await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)

    assert raised.value.status == 410
    assert github.requests[DOWNLOAD_ARTIFACT] == 1
    assert github.blob.requests == []
    assert not (tmp_path / "a.zip").exists()


async def test_an_artifact_listed_as_expired_is_not_requested(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run, expired=True)
    client = make_client()

    with pytest.raises(ArtifactExpired):
        await client.download_artifact(
            await only_artifact(client, run), tmp_path / "a.zip", max_bytes=MiB
        )

    assert github.requests[DOWNLOAD_ARTIFACT] == 0


async def test_an_oversize_artifact_is_refused_before_any_download(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run, content=bytes(2048))
    client = make_client()

    with pytest.raises(ArtifactError, match="1024-byte limit"):
        await client.download_artifact(
            await only_artifact(client, run), tmp_path / "a.zip", max_bytes=1024
        )

    assert github.requests[DOWNLOAD_ARTIFACT] == 0
    assert github.blob.requests == []


async def test_an_artifact_larger_than_the_free_space_fails_as_transient(
    github, make_client, tmp_path, monkeypatch
):
    # The client alone, with the free-space probe replaced; tests/test_sync_resources.py
    # fills a real tmpfs.
    run = github.add_run()
    github.add_artifact(run, content=bytes(4096))
    client = make_client()
    artifact = await only_artifact(client, run)
    full = shutil.disk_usage(tmp_path)._replace(free=1_000)
    monkeypatch.setattr(github_module.shutil, "disk_usage", lambda _path: full)

    with pytest.raises(InsufficientDiskSpace, match="1000 bytes are free"):
        await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)

    assert github.blob.requests == []


@pytest.mark.parametrize("declare_length", [True, False])
async def test_a_host_sending_more_than_the_limit_is_cut_off(
    github, make_client, tmp_path, declare_length
):
    run = github.add_run()
    github.add_artifact(run, content=os.urandom(3 * MiB))
    github.blob.declare_length = declare_length
    client = make_client()
    # The listing claims a small size: the limit must hold against the bytes themselves.
    artifact = dataclasses.replace(await only_artifact(client, run), size_in_bytes=100)
    destination = tmp_path / "a.zip"

    with pytest.raises(ArtifactError, match=f"{MiB}-byte limit"):
        await client.download_artifact(artifact, destination, max_bytes=MiB)

    assert not destination.exists()


async def test_a_dropped_connection_fails_and_a_second_call_gets_a_fresh_url(
    github, make_client, tmp_path
):
    content = os.urandom(MiB)
    run = github.add_run()
    github.add_artifact(run, content=content)
    client = make_client()
    artifact = await only_artifact(client, run)
    destination = tmp_path / "a.zip"
    github.drop_next_download(after_bytes=300_000)

    with pytest.raises(UpstreamError) as raised:
        await client.download_artifact(artifact, destination, max_bytes=4 * MiB)

    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, aiohttp.ClientPayloadError)
    assert not destination.exists()
    assert_no_secrets(raised.value, github)

    digest = await client.download_artifact(artifact, destination, max_bytes=4 * MiB)

    assert digest == hashlib.sha256(content).hexdigest()
    assert destination.read_bytes() == content
    first, second = github.blob.requests
    assert first.path != second.path  # the retry asked GitHub for a new signed URL
    assert not github.blob.authorization_seen


async def test_an_expired_signed_url_is_an_upstream_error_not_an_auth_error(
    github, make_client, tmp_path
):
    run = github.add_run()
    github.add_artifact(run)
    client = make_client()
    artifact = await only_artifact(client, run)
    github.blob.url_ttl = -1  # every signed URL is born expired

    with pytest.raises(UpstreamError) as raised:
        await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)

    assert type(raised.value) is UpstreamError
    assert raised.value.status is None  # retried like a dropped connection, with a fresh URL
    assert "answered 403" in str(raised.value)
    assert_no_secrets(raised.value, github)
    assert not (tmp_path / "a.zip").exists()


# -- failures ----------------------------------------------------------------------------------


async def test_a_5xx_fails_one_attempt_and_the_next_succeeds(github, make_client):
    runs = add_runs(github, 2)
    client = make_client()
    github.fail_next(LIST_RUNS, status=502)

    with pytest.raises(UpstreamError) as raised:
        await all_runs(client)

    assert raised.value.status == 502
    assert type(raised.value) is UpstreamError
    assert [run.id for run in await all_runs(client)] == [runs[1].id, runs[0].id]


async def test_a_5xx_on_the_download_redirect_then_success(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run, content=b"model zip")
    client = make_client()
    artifact = await only_artifact(client, run)
    github.fail_next(DOWNLOAD_ARTIFACT, status=503)

    with pytest.raises(UpstreamError) as raised:
        await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)
    digest = await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)

    assert raised.value.status == 503
    assert digest == hashlib.sha256(b"model zip").hexdigest()
    assert github.blob.downloads == 1


@pytest.mark.parametrize("status", [429, 403])
async def test_a_secondary_rate_limit_says_how_long_to_wait(github, make_client, status):
    github.add_run()
    github.limit_next(LIST_RUNS, status=status, retry_after=42)

    with pytest.raises(RateLimited) as raised:
        await all_runs(make_client())

    assert raised.value.retry_after == 42
    assert raised.value.status == status
    assert_no_secrets(raised.value, github)


async def test_an_exhausted_rate_limit_waits_until_its_reset(github, make_client):
    github.add_run()
    github.exhaust_rate_limit(reset_in=120)
    client = make_client()

    with pytest.raises(RateLimited) as raised:
        await all_runs(client)

    assert 110 <= raised.value.retry_after <= 120
    assert client.rate_limit_remaining == 0
    assert client.rate_limit_reset is not None
    assert int(client.rate_limit_reset.timestamp()) == github.rate_limit_reset


async def test_no_request_is_spent_until_an_exhausted_rate_limit_resets(github, make_client):
    github.add_run()
    github.exhaust_rate_limit(reset_in=120)
    client = make_client()
    with pytest.raises(RateLimited):
        await all_runs(client)
    sent = sum(github.requests.values())

    with pytest.raises(RateLimited) as raised:
        await all_runs(client)

    assert sum(github.requests.values()) == sent  # refused here, not by GitHub
    assert 100 <= raised.value.retry_after <= 120
    assert "not sent" in str(raised.value)


async def test_a_refused_token_is_an_authentication_error(github, session):
    github.add_run()
    client = GitHubActionsClient(session, github.settings(token=SecretStr("ghp_wrong_token")))

    with pytest.raises(AuthenticationError) as raised:
        await all_runs(client)

    assert raised.value.status == 401
    assert "ghp_wrong_token" not in str(raised.value)


async def test_a_revoked_token_fails_downloads_without_leaking_it(github, make_client, tmp_path):
    run = github.add_run()
    github.add_artifact(run)
    client = make_client()
    artifact = await only_artifact(client, run)
    github.revoke_token()

    with pytest.raises(AuthenticationError) as raised:
        await client.download_artifact(artifact, tmp_path / "a.zip", max_bytes=MiB)

    assert_no_secrets(raised.value, github)
    assert github.blob.requests == []


async def test_an_unknown_workflow_names_the_keys_to_check(github, make_client):
    with pytest.raises(UpstreamError, match=r"github\.workflow") as raised:
        await all_runs(make_client(workflow="missing.yml"))

    assert raised.value.status == 404


async def test_an_unreachable_api_is_an_upstream_error_from_the_connection_error(session):
    listener = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    settings = FakeGitHub().settings(api_url=f"http://127.0.0.1:{port}")

    with pytest.raises(UpstreamError) as raised:
        await GitHubActionsClient(session, settings).get_run(1)

    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, aiohttp.ClientConnectionError)


async def test_a_silent_api_times_out_as_an_upstream_error():
    connections: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    listener = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = FakeGitHub().settings(api_url=f"http://127.0.0.1:{port}")
    timeout = aiohttp.ClientTimeout(total=0.2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(UpstreamError) as raised:
                await GitHubActionsClient(session, settings).get_run(1)
    finally:
        for writer in connections:
            writer.close()
        listener.close()
        await listener.wait_closed()

    assert connections  # the request did reach the silent server
    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, TimeoutError)


@pytest.mark.parametrize(
    "body",
    [
        "<html>Unicorn!</html>",
        '{"total_count": 1}',
        '{"total_count": 1, "workflow_runs": [{"name": "no id"}]}',
    ],
)
async def test_a_malformed_answer_is_an_upstream_error(session, body):
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(text=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        settings = FakeGitHub().settings(api_url=str(server.make_url("")).rstrip("/"))

        with pytest.raises(UpstreamError) as raised:
            await all_runs(GitHubActionsClient(session, settings))

    assert raised.value.status in {None, 200}


# -- the status mapping, as a pure function ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "expected", "retry_after"),
    [
        (401, {}, AuthenticationError, None),
        (403, {"x-ratelimit-remaining": "17"}, AuthenticationError, None),
        (403, {"retry-after": "5"}, RateLimited, 5.0),
        (429, {}, RateLimited, 60.0),
        (429, {"retry-after": "Thu, 01 Jan 1970 00:16:50 GMT"}, RateLimited, 10.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1030"}, RateLimited, 30.0),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "900"}, RateLimited, 0.0),
        (500, {}, UpstreamError, None),
        (422, {}, UpstreamError, None),
    ],
)
def test_status_codes_map_to_typed_errors(status, headers, expected, retry_after):
    error = upstream_error(status, headers, request="GET /x", now=1000.0)

    assert type(error) is expected
    assert error.status == status
    if retry_after is not None:
        assert isinstance(error, RateLimited)
        assert error.retry_after == retry_after
