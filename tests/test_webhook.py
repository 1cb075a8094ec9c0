"""GitHub ``workflow_run`` deliveries to ``POST /webhooks/github`` of a real ops server, with
the fake GitHub behind the sync service: verified, judged, deduplicated, queued, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.services.webhook import signature_is_valid, signature_of
from tests.artifacts import model_artifact
from tests.fakes.github import (
    DOWNLOAD_ARTIFACT,
    LIST_ARTIFACTS,
    LIST_RUNS,
    FakeGitHub,
    FakeRun,
    delivery_headers,
    webhook_signature,
    workflow_run_payload,
)
from tests.ops_stack import EMBEDDED_VERSION, OpsStack, ops_settings, running_ops

# GitHub's published example ("Validating webhook deliveries").
GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SECRET = "webhook-secret-for-tests"


async def deliver(
    stack: OpsStack,
    body: bytes,
    *,
    event: str = "workflow_run",
    delivery: str | None = None,
    signature: str | None = None,
    signed: bool = True,
) -> tuple[int, Any]:
    signature = (signature or webhook_signature(body, SECRET)) if signed else None
    headers = delivery_headers(event=event, delivery=delivery, signature=signature)
    return await stack.post("/webhooks/github", body, headers)


def encoded(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def untouched(fake: FakeGitHub) -> bool:
    """GitHub and its blob host saw no request at all."""
    return sum(fake.requests.values()) == 0 and not fake.blob_requests


@pytest.fixture
async def stack(models_dir: Path, fake: FakeGitHub) -> AsyncIterator[OpsStack]:
    settings = ops_settings(models_dir, fake, ops={"webhook_secret": SECRET})
    async with running_ops(settings) as running:
        yield running


def new_model_run(fake: FakeGitHub, version: str, **run_options: Any) -> FakeRun:
    run = fake.add_run(**run_options)
    fake.add_artifact(run, content=model_artifact(version))
    return run


# -- the signature ----------------------------------------------------------------------------


def test_githubs_published_example_verifies() -> None:
    assert signature_of(GITHUB_SECRET, GITHUB_PAYLOAD) == GITHUB_SIGNATURE
    assert signature_is_valid(GITHUB_SECRET, GITHUB_PAYLOAD, GITHUB_SIGNATURE)


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (GITHUB_PAYLOAD, None),
        (GITHUB_PAYLOAD, ""),
        (GITHUB_PAYLOAD, GITHUB_SIGNATURE.removeprefix("sha256=")),  # no algorithm prefix
        (GITHUB_PAYLOAD, "sha1=" + GITHUB_SIGNATURE.removeprefix("sha256=")),
        (GITHUB_PAYLOAD, GITHUB_SIGNATURE[:-1] + "f"),  # one digit off
        (GITHUB_PAYLOAD, GITHUB_SIGNATURE + "00"),
        (b"Hello, World", GITHUB_SIGNATURE),  # the body changed
        (GITHUB_PAYLOAD + b"\n", GITHUB_SIGNATURE),
    ],
    ids=["missing", "empty", "bare-hex", "sha1", "one-digit", "longer", "body", "newline"],
)
def test_anything_but_the_exact_signature_is_refused(body: bytes, header: str | None) -> None:
    assert not signature_is_valid(GITHUB_SECRET, body, header)


async def test_githubs_example_answers_ping_over_http(models_dir: Path, fake: FakeGitHub) -> None:
    settings = ops_settings(models_dir, fake, ops={"webhook_secret": GITHUB_SECRET.decode()})
    async with running_ops(settings) as stack:
        status, body = await deliver(
            stack, GITHUB_PAYLOAD, event="ping", signature=GITHUB_SIGNATURE
        )

        assert (status, body) == (200, {"pong": True})
        await stack.webhooks.drain()
    assert untouched(fake)


WRONG_SIGNATURES: dict[str, Callable[[bytes], str | None]] = {
    "missing": lambda _body: None,
    "other-body": lambda body: webhook_signature(body + b" ", SECRET),
    "other-secret": lambda body: webhook_signature(body, "another secret"),
    "zeros": lambda _body: "sha256=" + "0" * 64,
}


@pytest.mark.parametrize("wrong_signature", WRONG_SIGNATURES.values(), ids=list(WRONG_SIGNATURES))
async def test_missing_or_wrong_signature_is_401_and_triggers_nothing(
    stack: OpsStack, fake: FakeGitHub, wrong_signature: Callable[[bytes], str | None]
) -> None:
    run = new_model_run(fake, "2.0.0")
    body = encoded(workflow_run_payload(fake, run))
    signature = wrong_signature(body)

    status, answer = await deliver(stack, body, signature=signature, signed=signature is not None)
    await stack.webhooks.drain()

    assert status == 401
    assert "signature" in answer["error"]
    assert untouched(fake)
    assert stack.serving() == EMBEDDED_VERSION


async def test_without_a_secret_the_endpoint_is_off(models_dir: Path, fake: FakeGitHub) -> None:
    async with running_ops(ops_settings(models_dir, fake)) as stack:
        run = new_model_run(fake, "2.0.0")
        body = encoded(workflow_run_payload(fake, run))

        status, _ = await deliver(stack, body, signature=webhook_signature(body, ""))
        await stack.webhooks.drain()

    assert status == 404
    assert untouched(fake)


# -- which deliveries trigger a sync ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "event", "reason"),
    [
        ({"repository": "someone/else"}, "workflow_run", "repository"),
        ({"conclusion": "failure"}, "workflow_run", "failure"),
        ({"status": "in_progress", "conclusion": None}, "workflow_run", "in_progress"),
        ({"head_repository": "attacker/trading-models"}, "workflow_run", "fork"),
        ({"event": "pull_request"}, "workflow_run", "pull_request"),
        ({"head_branch": "experiment"}, "workflow_run", "branch"),
        ({}, "pull_request", "not workflow_run"),
    ],
    ids=["wrong-repository", "failed", "running", "fork", "pr-run", "other-branch", "pr-event"],
)
async def test_deliveries_that_must_not_install_are_ignored(
    stack: OpsStack, fake: FakeGitHub, changes: dict[str, Any], event: str, reason: str
) -> None:
    run = new_model_run(fake, "2.0.0")
    payload = workflow_run_payload(fake, run, **changes)

    status, answer = await deliver(stack, encoded(payload), event=event)
    await stack.webhooks.drain()

    assert status == 200
    assert answer["queued"] is False
    assert reason in answer["reason"]
    assert untouched(fake)
    assert stack.serving() == EMBEDDED_VERSION


async def test_a_run_of_another_workflow_is_ignored(models_dir: Path, fake: FakeGitHub) -> None:
    settings = ops_settings(
        models_dir, fake, ops={"webhook_secret": SECRET}, github={"workflow": "train.yml"}
    )
    async with running_ops(settings) as stack:
        lint = fake.add_workflow("lint.yml", "Lint")
        run = new_model_run(fake, "2.0.0", workflow=lint)

        status, answer = await deliver(stack, encoded(workflow_run_payload(fake, run)))
        await stack.webhooks.drain()

    assert (status, answer["queued"]) == (200, False)
    assert "lint.yml" in answer["reason"]
    assert untouched(fake)


async def test_an_action_other_than_completed_is_ignored(stack: OpsStack, fake: FakeGitHub) -> None:
    run = new_model_run(fake, "2.0.0")
    payload = workflow_run_payload(fake, run) | {"action": "requested"}

    status, answer = await deliver(stack, encoded(payload))
    await stack.webhooks.drain()

    assert (status, answer["queued"]) == (200, False)
    assert untouched(fake)


async def test_a_successful_run_goes_live_without_listing_runs(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    run = new_model_run(fake, "2.0.0")

    status, answer = await deliver(stack, encoded(workflow_run_payload(fake, run)))

    assert status == 202
    assert answer == {"queued": True, "run_id": run.id}
    await stack.webhooks.drain()
    assert stack.serving() == "2.0.0"
    assert fake.requests[LIST_RUNS] == 0  # straight to the run in the payload
    assert fake.requests[LIST_ARTIFACTS] == 1
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1
    _, report = await stack.get("/status")
    assert report["models"]["unified_brain"]["provenance"]["run_id"] == run.id


async def test_a_webhook_install_says_so_in_its_provenance(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    run = new_model_run(fake, "2.0.0")
    await deliver(stack, encoded(workflow_run_payload(fake, run)))
    await stack.webhooks.drain()

    _, report = await stack.get("/status")

    assert report["models"]["unified_brain"]["provenance"]["source"] == "webhook"


async def test_a_redelivered_delivery_is_answered_but_not_run_again(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    run = new_model_run(fake, "2.0.0")
    body = encoded(workflow_run_payload(fake, run))
    delivery = str(uuid.uuid4())

    first = await deliver(stack, body, delivery=delivery)
    second = await deliver(stack, body, delivery=delivery)
    await stack.webhooks.drain()

    assert first[0] == 202
    assert second[0] == 200
    assert second[1]["queued"] is False
    assert f"delivery {delivery} already received" in second[1]["reason"]
    assert fake.blob.downloads == 1
    assert stack.webhooks.completed == 1
    assert stack.serving() == "2.0.0"


async def test_a_delivery_whose_sync_failed_can_be_redelivered(
    models_dir: Path, fake: FakeGitHub
) -> None:
    settings = ops_settings(
        models_dir, fake, ops={"webhook_secret": SECRET}, resilience={"max_retries": 0}
    )
    run = new_model_run(fake, "2.0.0")
    body = encoded(workflow_run_payload(fake, run))
    delivery = str(uuid.uuid4())
    async with running_ops(settings) as stack:
        fake.fail_next(LIST_ARTIFACTS, times=1, status=502)
        first = await deliver(stack, body, delivery=delivery)
        await stack.webhooks.drain()
        assert first[0] == 202
        assert stack.serving() != "2.0.0"  # GitHub failed us: nothing installed

        again = await deliver(stack, body, delivery=delivery)  # GitHub's "Redeliver"
        await stack.webhooks.drain()

        assert again[0] == 202
        assert stack.serving() == "2.0.0"
        assert fake.blob.downloads == 1


async def test_deliveries_during_a_sync_wait_for_it_and_run_once_each(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    older = new_model_run(fake, "2.0.0")
    newer = new_model_run(fake, "3.0.0")

    async with stack.sync.claim() as claimed:  # a sync holds the pipeline
        assert claimed
        assert (await deliver(stack, encoded(workflow_run_payload(fake, older))))[0] == 202
        assert (await deliver(stack, encoded(workflow_run_payload(fake, newer))))[0] == 202
        # Another delivery for a queued run (GitHub sends one per re-request) is not queued.
        again = await deliver(stack, encoded(workflow_run_payload(fake, newer)))
        assert again[1] == {"queued": False, "reason": f"run {newer.id} is already queued"}
        await asyncio.sleep(0.2)
        assert untouched(fake)
        assert stack.serving() == EMBEDDED_VERSION

    await stack.webhooks.drain()

    assert stack.webhooks.completed == 2
    assert fake.requests[DOWNLOAD_ARTIFACT] == 2
    assert fake.blob.downloads == 2
    assert fake.requests[LIST_RUNS] == 0
    assert stack.serving() == "3.0.0"


async def test_a_body_over_the_limit_is_413_and_triggers_nothing(
    models_dir: Path, fake: FakeGitHub
) -> None:
    settings = ops_settings(
        models_dir, fake, ops={"webhook_secret": SECRET, "max_webhook_body_mb": 0.001}
    )
    async with running_ops(settings) as stack:
        run = new_model_run(fake, "2.0.0")
        payload = workflow_run_payload(fake, run) | {"padding": "x" * 2048}
        body = encoded(payload)

        status, _ = await deliver(stack, body)
        await stack.webhooks.drain()

        small = encoded(workflow_run_payload(fake, run))
        assert len(small) < 0.001 * (1 << 20) < len(body)
        assert (await deliver(stack, small))[0] == 202  # the same delivery, under the limit
        await stack.webhooks.drain()

    assert status == 413
    assert fake.requests[DOWNLOAD_ARTIFACT] == 1  # only the one under the limit


# -- hostile bodies: validated, bounded in size, concurrency and time (issue 8) -----------------


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "completed", "repository": "octo-org/trading-models", "workflow_run": {}},
        {"action": "completed", "repository": ["x"], "workflow_run": {"id": 1}},
        {"action": ["completed"], "workflow_run": {"id": {"a": 1}}},
    ],
)
async def test_a_signed_body_of_the_wrong_shape_is_answered_not_a_500(
    stack: OpsStack, fake: FakeGitHub, payload: dict[str, Any]
) -> None:
    status, _ = await deliver(stack, encoded(payload))

    assert status in {200, 400}
    assert untouched(fake)


async def test_a_signed_body_nested_too_deep_is_400(stack: OpsStack, fake: FakeGitHub) -> None:
    status, _ = await deliver(stack, b"[" * 100_000 + b"]" * 100_000)

    assert status == 400
    assert untouched(fake)


async def test_an_unsigned_body_is_refused_before_it_is_read(models_dir: Path) -> None:
    settings = ops_settings(models_dir, ops={"webhook_secret": SECRET, "body_timeout_seconds": 30})
    async with running_ops(settings) as stack:
        started = asyncio.get_running_loop().time()
        # Headers only: a body is announced but never sent. Unsigned, it is not waited for.
        answer = await raw_request(stack, content_length=10 << 20, body=b"", signature=None)

        assert answer.startswith(b"HTTP/1.1 401")
        assert asyncio.get_running_loop().time() - started < 5


async def test_a_body_that_never_finishes_arriving_times_out(models_dir: Path) -> None:
    settings = ops_settings(models_dir, ops={"webhook_secret": SECRET, "body_timeout_seconds": 0.5})
    async with running_ops(settings) as stack:
        started = asyncio.get_running_loop().time()
        answer = await raw_request(stack, content_length=1000, body=b"{" * 10)

        assert answer.startswith(b"HTTP/1.1 408")
        assert asyncio.get_running_loop().time() - started < 3


async def test_concurrent_large_bodies_are_read_a_few_at_a_time(models_dir: Path) -> None:
    size = 8 << 20
    settings = ops_settings(
        models_dir,
        ops={"webhook_secret": SECRET, "max_webhook_body_mb": 10, "max_concurrent_bodies": 2,
             "body_timeout_seconds": 5},
    )  # fmt: skip
    payload = memoryview(b"x" * size)  # one for all clients, made before tracing starts
    async with running_ops(settings) as stack:
        release = threading.Event()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            # Threads with blocking sockets: the clients' own buffers are the kernel's, so what
            # tracemalloc sees is what the server holds.
            clients = [
                asyncio.create_task(
                    asyncio.to_thread(slow_client, stack.server.port, payload, release)
                )
                for _ in range(20)
            ]
            await asyncio.sleep(2.0)  # every client has sent all but its last byte
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
            release.set()
        answers = await asyncio.gather(*clients)

    # Read all at once, 20 bodies grow the server by 160 MiB (57 MiB measured by 2 s, still
    # arriving); two at a time, by 2 bodies and a copy (22 MiB measured).
    assert peak < 4 * size, peak
    assert all(a.startswith((b"HTTP/1.1 401", b"HTTP/1.1 503", b"")) for a in answers), answers
    assert sum(a.startswith(b"HTTP/1.1 401") for a in answers) >= 2


def slow_client(port: int, payload: memoryview, release: threading.Event) -> bytes:
    """A webhook POST with a bogus signature whose last byte waits for ``release``."""
    size = len(payload)
    head = (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: workflow_run\r\n"
        f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {size}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        try:
            connection.sendall(head.encode())
            connection.sendall(payload[:-1])
            release.wait(30)
            connection.sendall(payload[-1:])
            return connection.makefile("rb").readline()
        except OSError:  # refused (503) and closed while still sending
            return b""


async def raw_request(
    stack: OpsStack,
    *,
    content_length: int,
    body: bytes,
    signature: str | None = "sha256=" + "0" * 64,
    last: asyncio.Event | None = None,
) -> bytes:
    """POST a webhook by hand: the announced length, ``body``, then (after ``last``) one byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.server.port)
    try:
        head = [
            "POST /webhooks/github HTTP/1.1",
            "Host: 127.0.0.1",
            "Content-Type: application/json",
            "X-GitHub-Event: workflow_run",
            f"Content-Length: {content_length}",
        ]
        if signature is not None:
            head.append(f"X-Hub-Signature-256: {signature}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        writer.write(body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            if last is not None:
                await last.wait()
                writer.write(b"}")
                await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_under_a_host_the_queue_stops_with_it_and_what_is_left_can_be_redelivered(
    stack: OpsStack, fake: FakeGitHub
) -> None:
    older = new_model_run(fake, "2.0.0")
    newer = new_model_run(fake, "3.0.0")
    stopping = asyncio.Event()
    job = asyncio.create_task(stack.webhooks.run_forever(stopping))

    async with stack.sync.claim():  # a sync holds the pipeline: the job's first sync waits
        assert (await deliver(stack, encoded(workflow_run_payload(fake, older)), delivery="a"))[
            0
        ] == 202
        assert (await deliver(stack, encoded(workflow_run_payload(fake, newer)), delivery="b"))[
            0
        ] == 202
        await asyncio.sleep(0.1)
        stopping.set()  # the host stops while one sync waits and one is queued
    await asyncio.wait_for(job, timeout=10)

    assert stack.webhooks.completed == 1  # the one under way finished; the other was dropped
    assert stack.serving() == "2.0.0"
    again = await deliver(stack, encoded(workflow_run_payload(fake, newer)), delivery="b")
    assert again[0] == 202  # forgotten, so GitHub's redelivery is taken
