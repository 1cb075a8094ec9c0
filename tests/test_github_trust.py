"""Bounded trust in what GitHub (or anything posing as it) answers (issue 8).

Pages per cycle are capped, not only items; rate-limit resets are believed up to an hour and
nonsense is ignored; a download that redirects to anything but https (loopback http in tests)
rejects that artifact; an endless body is cut at a cap; and a network failure names its cause.
Every case runs against a real server on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.errors import RateLimited, UntrustedAnswer, UpstreamError
from app.services.github import MAX_API_BODY_BYTES, GitHubActionsClient, sane_reset
from app.services.resilience import retry_wait
from app.settings import ResilienceSettings
from tests.artifacts import model_artifact
from tests.fakes.github import DOWNLOAD_ARTIFACT, LIST_RUNS
from tests.sync_host import EMBEDDED_VERSION, SLOT, fake_settings, good_run

HOUR = 3600


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


# -- pages --------------------------------------------------------------------------------------


async def test_empty_pages_that_always_link_a_next_one_stop_at_the_page_cap(fake, host):
    good_run(fake, "v2")
    fake.empty_pages_forever = True

    report = await host.sync.synchronize_models(force=True)

    cap = host.settings.github.max_pages_per_cycle
    assert report.outcome == "failed", report
    assert f"more than {cap} pages" in report.reason
    assert fake.requests[LIST_RUNS] == cap  # not the whole hourly quota
    fake.empty_pages_forever = False

    again = await host.sync.synchronize_models(force=True)

    assert again.outcome == "installed", again  # the cap is per cycle


async def test_an_endless_json_listing_is_cut_at_the_body_cap(fake, host):
    fake.endless_listing = True

    started = time.monotonic()
    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "failed", report
    assert f"more than {MAX_API_BODY_BYTES} bytes" in report.reason
    assert fake.requests[LIST_RUNS] == 1  # not retried: it would be as long again
    assert time.monotonic() - started < 10


# -- rate limits --------------------------------------------------------------------------------


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("header", "believed"),
    [
        (str(NOW + 30), 30),
        (str(NOW + 7200), HOUR),  # more than GitHub's hour: clamped
        (str(NOW - 30), 0),  # already past
        ("32503680000", None),  # the year 3000
        ("-5", None),
        ("-99999999999999999999", None),
        ("soon", None),
        ("1.5e9", None),
        ("", None),
        (None, None),
    ],
)
def test_rate_limit_resets_are_believed_up_to_an_hour_and_nonsense_is_ignored(header, believed):
    reset = sane_reset(header, float(NOW))

    assert (None if reset is None else round(reset - NOW)) == believed


@pytest.mark.parametrize("reset", ["32503680000", "-5", "-99999999999999999999", "soon"])
async def test_a_bad_reset_neither_crashes_nor_blocks_the_next_cycle(fake, host, reset):
    good_run(fake, "v2")
    fake.exhaust_rate_limit(reset_in=30)
    fake.reset_header = reset

    limited = await host.sync.synchronize_models(force=True)

    assert limited.outcome == "failed", limited
    assert "rate limit" in limited.reason
    fake.rate_limit_remaining = 5000
    fake.reset_header = None

    again = await host.sync.synchronize_models(force=True)

    assert again.outcome == "installed", again
    assert host.serving() == {SLOT: "v2"}


async def test_a_retry_after_beyond_an_hour_is_clamped(fake, session):
    fake.limit_next(LIST_RUNS, retry_after=10**9)
    client = GitHubActionsClient(session, fake.settings())

    with pytest.raises(RateLimited) as caught:
        _ = [run async for run in client.iter_runs()]

    assert caught.value.retry_after == HOUR


# -- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "http://example.com/blob.zip", "ftp://127.0.0.1/a.zip", "gopher:x"],
)
async def test_a_download_redirected_off_https_rejects_that_artifact_only(fake, host, location):
    run = fake.add_run()
    hostile = fake.add_artifact(run, "trained-model-b", model_artifact("hostile"))
    fake.download_location = location

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "rejected", report
    assert "not https" in report.reason
    assert host.artifact_record(hostile.id)["outcome"] == "rejected"
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1  # not retried
    assert host.serving() == {SLOT: EMBEDDED_VERSION}
    fake.download_location = None
    good_run(fake, "v2")

    again = await host.sync.synchronize_models(force=True)

    assert again.outcome == "installed", again


@pytest.mark.parametrize("link", ["file:///etc/passwd", "http://example.com/runs?page=2"])
async def test_a_next_link_off_https_fails_the_listing_and_is_not_followed(fake, session, link):
    fake.add_run()
    fake.next_link = link
    client = GitHubActionsClient(session, fake.settings())

    with pytest.raises(UntrustedAnswer, match="not https"):
        _ = [run async for run in client.iter_runs()]

    assert fake.requests[LIST_RUNS] == 1


# -- network failures name their cause ----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_connection_refused_is_named(fake, session):
    client = GitHubActionsClient(
        session, fake.settings(api_url=f"http://127.0.0.1:{closed_port()}")
    )

    with pytest.raises(UpstreamError, match=r"connection refused by 127\.0\.0\.1:"):
        _ = [run async for run in client.iter_runs()]


async def test_a_failed_dns_lookup_is_named(fake, session):
    client = GitHubActionsClient(session, fake.settings(api_url="http://no-such-host.invalid"))

    with pytest.raises(UpstreamError, match=r"DNS lookup of no-such-host\.invalid failed"):
        _ = [run async for run in client.iter_runs()]


async def test_a_tls_failure_is_named(fake, session):
    plain = fake.api_url.replace("http://", "https://")  # a TLS hello to a plain HTTP server
    client = GitHubActionsClient(session, fake.settings(api_url=plain))

    with pytest.raises(UpstreamError, match="TLS"):
        _ = [run async for run in client.iter_runs()]


async def test_a_read_timeout_is_named(fake):
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await release.wait()  # accepts the request, never answers
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            client = GitHubActionsClient(http, fake.settings(api_url=f"http://127.0.0.1:{port}"))

            with pytest.raises(UpstreamError, match="timed out"):
                _ = [run async for run in client.iter_runs()]
    finally:
        release.set()
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()


async def test_a_sync_that_cannot_connect_says_why(fake, models_dir, start_host):
    settings = fake_settings(
        fake, models_dir, github={"api_url": f"http://127.0.0.1:{closed_port()}"}
    )
    host = await start_host(settings)

    report = await host.sync.synchronize_models(force=True)

    assert report.outcome == "failed"
    assert "connection refused" in report.reason
    assert "ClientConnectorError" not in report.reason


def test_untrusted_answers_are_not_retried_at_once():
    assert retry_wait(UntrustedAnswer("too big"), 1, ResilienceSettings()) is None
