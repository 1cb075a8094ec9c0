"""ProductionResilienceService: retries with stamina, and a circuit breaker per operation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import stamina
from aiohttp import web
from aiohttp.test_utils import TestServer
from loguru import logger

from app.errors import (
    ArtifactError,
    ArtifactExpired,
    AuthenticationError,
    ModelError,
    RateLimited,
    UpstreamError,
)
from app.services.breaker import CallOutcome, CircuitOpen
from app.services.resilience import (
    ProductionResilienceService,
    backoff_seconds,
    breaker_outcome,
    retry_wait,
)
from app.settings import ResilienceSettings


@pytest.fixture
def log_messages() -> Iterator[list[str]]:
    messages: list[str] = []
    logger.enable("app")
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="DEBUG")
    yield messages
    logger.remove(sink)
    logger.disable("app")


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Upstream:
    """A scripted upstream: each attempt raises the next scripted error, then answers."""

    def __init__(self, *failures: BaseException, answer: str = "ok") -> None:
        self.failures = list(failures)
        self.attempts = 0
        self.answer = answer

    async def __call__(self) -> str:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.answer


class AlwaysFailing:
    """An upstream that fails every attempt with a fresh error of the same kind."""

    def __init__(self, make_error: Callable[[], BaseException]) -> None:
        self.make_error = make_error
        self.attempts = 0
        self.last: BaseException | None = None

    async def __call__(self) -> str:
        self.attempts += 1
        self.last = self.make_error()
        raise self.last


def make_settings(**overrides: Any) -> ResilienceSettings:
    values: dict[str, Any] = {
        "max_retries": 3,
        "base_delay_seconds": 0,  # no waiting unless a test asks for it
        "max_delay_seconds": 1,
        "http_timeout_seconds": 5,
        "breaker_failure_threshold": 3,
        "breaker_open_seconds": 60,
    }
    return ResilienceSettings(**(values | overrides))


def server_error() -> UpstreamError:
    return UpstreamError("HTTP 503 from api.github.com", status=503)


async def fail_calls(
    service: ProductionResilienceService, operation: str, count: int
) -> AlwaysFailing:
    upstream = AlwaysFailing(server_error)
    for _ in range(count):
        with pytest.raises(UpstreamError):
            await service.call(operation, upstream)
    return upstream


# --- pure decisions ------------------------------------------------------------------------


def test_backoff_doubles_from_base_and_stops_at_the_cap() -> None:
    waits = [backoff_seconds(n, base=0.5, cap=30, jitter=0) for n in range(1, 9)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_seconds(2, base=0.5, cap=30, jitter=0.25) == 1.25
    assert backoff_seconds(7, base=0.5, cap=30, jitter=0.25) == 30


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (UpstreamError("connection reset", status=None), 2.0),
        (UpstreamError("HTTP 500", status=500), 2.0),
        (UpstreamError("HTTP 503", status=503), 2.0),
        (RateLimited("secondary rate limit", retry_after=7, status=403), 7.0),
        (RateLimited("secondary rate limit", retry_after=11, status=429), None),
        (UpstreamError("HTTP 404", status=404), None),
        (UpstreamError("HTTP 422", status=422), None),
        (AuthenticationError("HTTP 401: bad credentials", status=401), None),
        (ArtifactExpired("artifact 7 expired", status=410), None),
        (CircuitOpen("list_runs", 30), None),
        (ArtifactError("hostile zip member ../x"), None),
        (ModelError("output is NaN"), None),
        (ValueError("503 connection reset"), None),  # the message never decides
    ],
)
def test_retry_is_decided_by_type_and_status(error: Exception, wait: float | None) -> None:
    settings = make_settings(base_delay_seconds=1, max_delay_seconds=10)
    assert retry_wait(error, 2, settings) == wait


def test_no_retry_past_max_retries() -> None:
    settings = make_settings(max_retries=2)
    assert retry_wait(server_error(), 2, settings) is not None
    assert retry_wait(server_error(), 3, settings) is None
    assert retry_wait(RateLimited("slow down", retry_after=0), 3, settings) is None


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (UpstreamError("connection refused", status=None), CallOutcome.FAILURE),
        (UpstreamError("HTTP 502", status=502), CallOutcome.FAILURE),
        (RateLimited("rate limited", retry_after=3600, status=429), CallOutcome.FAILURE),
        (AuthenticationError("HTTP 401", status=401), CallOutcome.FAILURE),
        (UpstreamError("HTTP 404", status=404), CallOutcome.NEUTRAL),
        (ArtifactExpired("gone", status=410), CallOutcome.NEUTRAL),
        (ArtifactError("checksum mismatch"), CallOutcome.NEUTRAL),
        (ModelError("bad model"), CallOutcome.NEUTRAL),
        (KeyError("id"), CallOutcome.NEUTRAL),
    ],
)
def test_breaker_counts_only_the_upstream_refusing_us(
    error: Exception, outcome: CallOutcome
) -> None:
    assert breaker_outcome(error) is outcome


# --- retries -------------------------------------------------------------------------------


async def test_retries_stop_at_max_retries_and_raise_the_last_error(
    log_messages: list[str],
) -> None:
    service = ProductionResilienceService(make_settings(max_retries=3))
    upstream = AlwaysFailing(server_error)

    with pytest.raises(UpstreamError) as raised:
        await service.call("list_runs", upstream)

    assert upstream.attempts == 4
    assert raised.value is upstream.last
    retries = [m for m in log_messages if "retry" in m]
    assert retries == [
        f"⚠️ [CLOUD-SYNC] list_runs failed (HTTP 503 from api.github.com); retry {n}/3 in 0.0s"
        for n in (1, 2, 3)
    ]


async def test_zero_max_retries_means_one_attempt() -> None:
    service = ProductionResilienceService(make_settings(max_retries=0))
    upstream = AlwaysFailing(server_error)
    with pytest.raises(UpstreamError):
        await service.call("list_runs", upstream)
    assert upstream.attempts == 1


async def test_server_errors_then_success_against_a_real_server() -> None:
    statuses = [502, 503, 200]
    hits = 0

    async def runs(_: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        status = statuses.pop(0)
        return web.json_response({"total_count": 0}, status=status)

    app = web.Application()
    app.router.add_get("/actions/runs", runs)
    service = ProductionResilienceService(make_settings())
    async with TestServer(app, host="127.0.0.1", port=0) as server, aiohttp.ClientSession() as http:

        async def list_runs() -> dict[str, Any]:
            async with http.get(server.make_url("/actions/runs")) as response:
                if response.status >= 500:
                    raise UpstreamError(f"HTTP {response.status}", status=response.status)
                body: dict[str, Any] = await response.json()
                return body

        assert await service.call("list_runs", list_runs) == {"total_count": 0}

    assert hits == 3


async def test_connection_errors_are_retried() -> None:
    service = ProductionResilienceService(make_settings())
    upstream = Upstream(
        UpstreamError("connection reset by peer", status=None),
        UpstreamError("cannot connect to host", status=None),
    )
    assert await service.call("download", upstream) == "ok"
    assert upstream.attempts == 3


async def test_a_slow_attempt_times_out_and_is_retried_against_a_real_server(
    log_messages: list[str],
) -> None:
    delays = [5.0, 0.0]

    async def artifact(_: web.Request) -> web.Response:
        await asyncio.sleep(delays.pop(0))
        return web.Response(text="zip bytes")

    app = web.Application()
    app.router.add_get("/artifact", artifact)
    service = ProductionResilienceService(make_settings(http_timeout_seconds=0.2))
    async with TestServer(app, host="127.0.0.1", port=0) as server, aiohttp.ClientSession() as http:

        async def fetch() -> str:
            async with http.get(server.make_url("/artifact")) as response:
                return await response.text()

        started = time.monotonic()
        assert await service.call("download", fetch) == "zip bytes"
        assert time.monotonic() - started < 3

    assert any("download failed (download timed out after 0.2s)" in m for m in log_messages)


async def test_timeouts_surface_as_connection_level_upstream_errors() -> None:
    service = ProductionResilienceService(make_settings(max_retries=1))

    async def hang() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(UpstreamError) as raised:
        await service.call("list_runs", hang, timeout=0.05)
    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, TimeoutError)


async def test_timeout_none_lets_a_long_download_finish() -> None:
    service = ProductionResilienceService(make_settings(http_timeout_seconds=0.05, max_retries=0))

    async def long_download() -> str:
        await asyncio.sleep(0.3)
        return "all 300 MB"

    with pytest.raises(UpstreamError, match=r"timed out after 0\.05s"):
        await service.call("download", long_download)
    assert await service.call("download", long_download, timeout=None) == "all 300 MB"


async def test_retry_after_is_waited_exactly_not_the_exponential_backoff(
    log_messages: list[str],
) -> None:
    # An exponential wait would be at least 5 s; retry-after asks for 0.2 s.
    service = ProductionResilienceService(make_settings(base_delay_seconds=5, max_delay_seconds=10))
    upstream = Upstream(RateLimited("secondary rate limit", retry_after=0.2, status=403))

    started = time.monotonic()
    assert await service.call("list_artifacts", upstream) == "ok"
    elapsed = time.monotonic() - started

    assert upstream.attempts == 2
    assert 0.19 <= elapsed < 2.0
    assert log_messages[-1].endswith("retry 1/3 in 0.2s")


async def test_retry_after_above_the_cap_is_raised_without_sleeping(
    log_messages: list[str],
) -> None:
    service = ProductionResilienceService(make_settings(max_delay_seconds=1))
    limited = RateLimited("secondary rate limit", retry_after=3600, status=429)
    upstream = Upstream(limited)

    started = time.monotonic()
    with pytest.raises(RateLimited) as raised:
        await service.call("list_runs", upstream)

    assert time.monotonic() - started < 0.5
    assert raised.value is limited
    assert upstream.attempts == 1
    assert any("not waiting" in m for m in log_messages)


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("HTTP 401: bad credentials", status=401),
        ArtifactExpired("artifact 7 expired", status=410),
        UpstreamError("HTTP 404", status=404),
        ArtifactError("checksum mismatch"),
        ModelError("incompatible input"),
        RuntimeError("a bug of ours"),
    ],
)
async def test_errors_that_retrying_cannot_fix_pass_through_at_once(error: Exception) -> None:
    service = ProductionResilienceService(make_settings())
    upstream = Upstream(error)
    with pytest.raises(type(error)) as raised:
        await service.call("download", upstream)
    assert raised.value is error
    assert upstream.attempts == 1


async def test_stamina_test_mode_turns_retries_off_for_other_modules_tests() -> None:
    service = ProductionResilienceService(make_settings(base_delay_seconds=5))
    upstream = AlwaysFailing(server_error)
    with stamina.set_testing(True, attempts=1), pytest.raises(UpstreamError):
        await service.call("list_runs", upstream)
    assert upstream.attempts == 1


# --- circuit breaker ---------------------------------------------------------------------


async def test_breaker_opens_after_threshold_failed_calls_not_attempts(
    log_messages: list[str],
) -> None:
    service = ProductionResilienceService(
        make_settings(max_retries=1, breaker_failure_threshold=3), clock=ManualClock()
    )

    upstream = await fail_calls(service, "list_runs", 2)
    assert upstream.attempts == 4  # more attempts than the threshold, yet only 2 calls
    assert service.breaker_state("list_runs") == "closed"

    await fail_calls(service, "list_runs", 1)
    assert service.breaker_state("list_runs") == "open"
    assert "❌ [CLOUD-SYNC] Circuit for list_runs opened after 3 failures" in log_messages[-1]


async def test_open_breaker_fails_fast_without_calling_upstream() -> None:
    clock = ManualClock()
    service = ProductionResilienceService(make_settings(breaker_open_seconds=60), clock=clock)
    await fail_calls(service, "list_runs", 3)
    clock.advance(15)

    upstream = Upstream()
    with pytest.raises(CircuitOpen, match=r"circuit for list_runs is open.* in 45s") as raised:
        await service.call("list_runs", upstream)

    assert upstream.attempts == 0
    assert isinstance(raised.value, UpstreamError)
    assert raised.value.retry_in == pytest.approx(45)


async def test_a_success_resets_the_consecutive_count() -> None:
    service = ProductionResilienceService(make_settings(), clock=ManualClock())
    await fail_calls(service, "list_runs", 2)
    assert await service.call("list_runs", Upstream()) == "ok"
    await fail_calls(service, "list_runs", 2)
    assert service.breaker_state("list_runs") == "closed"


async def test_authentication_errors_count_and_artifact_errors_do_not() -> None:
    service = ProductionResilienceService(make_settings(), clock=ManualClock())
    for _ in range(5):
        with pytest.raises(ArtifactError):
            await service.call("download", Upstream(ArtifactError("zip bomb")))
    assert service.breaker_state("download") == "closed"

    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await service.call("download", Upstream(AuthenticationError("401", status=401)))
    assert service.breaker_state("download") == "open"


async def test_half_open_lets_exactly_one_trial_through_then_closes_on_success(
    log_messages: list[str],
) -> None:
    clock = ManualClock()
    service = ProductionResilienceService(make_settings(breaker_open_seconds=60), clock=clock)
    await fail_calls(service, "download", 3)
    clock.advance(60)
    assert service.breaker_state("download") == "half_open"

    release = asyncio.Event()
    trial_attempts = 0

    async def slow_trial() -> str:
        nonlocal trial_attempts
        trial_attempts += 1
        await release.wait()
        return "recovered"

    trial = asyncio.create_task(service.call("download", slow_trial))
    await asyncio.sleep(0)  # the trial is admitted and now waits upstream

    others = Upstream()
    for _ in range(3):
        with pytest.raises(CircuitOpen, match="trial call is in flight"):
            await service.call("download", others)
    assert others.attempts == 0
    assert service.breaker_state("download") == "half_open"

    release.set()
    assert await trial == "recovered"
    assert trial_attempts == 1
    assert service.breaker_state("download") == "closed"
    assert (
        log_messages[-1] == "✅ [CLOUD-SYNC] Circuit for download closed: the trial call succeeded"
    )
    await fail_calls(service, "download", 2)  # counting starts again from zero
    assert service.breaker_state("download") == "closed"
    assert await service.call("download", others) == "ok"


async def test_calls_admitted_before_the_circuit_opened_do_not_speak_for_the_trial() -> None:
    clock = ManualClock()
    changes: list[tuple[str, str]] = []
    service = ProductionResilienceService(
        make_settings(max_retries=0, breaker_open_seconds=60),
        lambda operation, state: changes.append((operation, state)),
        clock=clock,
    )
    release = asyncio.Event()

    async def stale() -> str:
        await release.wait()
        raise server_error()

    straggler = asyncio.create_task(service.call("download", stale))
    await asyncio.sleep(0)  # admitted while the circuit is still closed
    await fail_calls(service, "download", 3)
    clock.advance(60)
    assert service.breaker_state("download") == "half_open"

    release.set()
    with pytest.raises(UpstreamError):
        await straggler

    assert service.breaker_state("download") == "half_open"
    assert changes == [("download", "open"), ("download", "half_open")]


async def test_a_failed_trial_reopens_for_another_full_period(log_messages: list[str]) -> None:
    clock = ManualClock()
    service = ProductionResilienceService(make_settings(breaker_open_seconds=60), clock=clock)
    await fail_calls(service, "list_runs", 3)
    clock.advance(60)

    await fail_calls(service, "list_runs", 1)

    assert service.breaker_state("list_runs") == "open"
    assert "reopened: the trial call failed" in log_messages[-1]
    clock.advance(59)
    with pytest.raises(CircuitOpen):
        await service.call("list_runs", Upstream())
    clock.advance(1)
    assert await service.call("list_runs", Upstream()) == "ok"
    assert service.breaker_state("list_runs") == "closed"


async def test_a_cancelled_trial_frees_the_slot_for_the_next_caller() -> None:
    clock = ManualClock()
    service = ProductionResilienceService(make_settings(breaker_open_seconds=60), clock=clock)
    await fail_calls(service, "download", 3)
    clock.advance(60)

    async def forever() -> str:
        await asyncio.Event().wait()
        return "never"

    trial = asyncio.create_task(service.call("download", forever))
    await asyncio.sleep(0)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial

    assert service.breaker_state("download") == "half_open"
    assert await service.call("download", Upstream()) == "ok"
    assert service.breaker_state("download") == "closed"


async def test_breakers_are_per_operation() -> None:
    service = ProductionResilienceService(make_settings(), clock=ManualClock())
    await fail_calls(service, "list_runs", 3)

    assert await service.call("download", Upstream()) == "ok"
    assert service.breaker_states() == {"download": "closed", "list_runs": "open"}
    assert service.breaker_state("never_called") == "closed"


async def test_state_changes_reach_the_monitoring_hook() -> None:
    clock = ManualClock()
    changes: list[tuple[str, str]] = []
    service = ProductionResilienceService(
        make_settings(breaker_open_seconds=60),
        lambda operation, state: changes.append((operation, state)),
        clock=clock,
    )
    await fail_calls(service, "list_runs", 3)
    clock.advance(60)
    await fail_calls(service, "list_runs", 1)
    clock.advance(60)
    await service.call("list_runs", Upstream())

    assert changes == [
        ("list_runs", "open"),
        ("list_runs", "half_open"),
        ("list_runs", "open"),
        ("list_runs", "half_open"),
        ("list_runs", "closed"),
    ]


async def test_a_broken_monitoring_hook_does_not_change_the_call(
    log_messages: list[str],
) -> None:
    def broken(operation: str, state: str) -> None:
        raise RuntimeError(f"metrics down for {operation} {state}")

    clock = ManualClock()
    service = ProductionResilienceService(make_settings(), broken, clock=clock)
    upstream = await fail_calls(service, "list_runs", 3)

    assert isinstance(upstream.last, UpstreamError)
    assert service.breaker_state("list_runs") == "open"
    assert any("on_state_change failed for list_runs" in m for m in log_messages)


def _typed(service: ProductionResilienceService, call: Callable[[], Awaitable[int]]) -> None:
    """Never run: mypy checks that `call` keeps the callable's result type."""
    result: Awaitable[int] = service.call("op", call)
    del result
