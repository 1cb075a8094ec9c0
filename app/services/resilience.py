"""Retries with backoff, and a circuit breaker per operation, around every upstream call.

What is retried, decided from the exception's type and status, never its message:

- ``UpstreamError`` with ``status`` None (connection failure, timeout) or >= 500: exponential
  backoff ``base * 2^(n-1)`` plus up to ``base`` of jitter, capped at ``max_delay_seconds``;
- ``RateLimited``: exactly its ``retry_after``; when that is above ``max_delay_seconds`` it is
  raised at once, so the caller's next cycle tries again instead of a task sleeping for an hour;
- nothing else: ``AuthenticationError``, ``ArtifactExpired``, ``UntrustedAnswer`` (the same
  oversized answer would come again), other 4xx, ``ArtifactError``, ``ModelError`` and any
  other exception pass straight through.

Only idempotent work may be passed in: ``func`` runs again from the start on each attempt
(which is also how a download gets a fresh signed URL: ask the API inside ``func``).

stamina runs the loop, counts attempts, sleeps, and obeys ``stamina.set_active`` and
``stamina.set_testing`` (another module's tests can make every retry instant with
``stamina.set_testing(True)``). Each wait is computed here and handed to stamina as the
hook's custom backoff, so the log line states the real wait and retry-after takes the same path.

The breaker counts failed *calls* (a call is all of its attempts), not attempts: retries
already absorb a blip, so a call that failed after its backoff is the evidence that the
upstream is down, and the two settings stay independent (counting attempts, the default
threshold of 5 would trip inside the second call of a 4-attempt budget). Failures that say
the upstream will not serve us count: connection failures, timeouts, 5xx, rate limits and
refused tokens (hammering GitHub with a bad token helps no one). The rest says nothing about
its health and counts neither way: 410 and other 4xx, bad artifact content, our own bugs,
cancellation.
"""

from __future__ import annotations

import asyncio
import random
import time
from enum import Enum
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import stamina
from loguru import logger

from app.errors import (
    ArtifactExpired,
    AuthenticationError,
    RateLimited,
    UntrustedAnswer,
    UpstreamError,
)
from app.services.breaker import (
    CallOutcome,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    Transition,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from app.settings import ResilienceSettings

__all__ = [
    "HTTP_TIMEOUT",
    "CircuitOpen",
    "ProductionResilienceService",
    "backoff_seconds",
    "breaker_outcome",
    "retry_wait",
]

T = TypeVar("T")


class _Default(Enum):
    HTTP_TIMEOUT = "resilience.http_timeout_seconds"


HTTP_TIMEOUT: Final = _Default.HTTP_TIMEOUT
"""``call``'s default per-attempt timeout: the ``resilience.http_timeout_seconds`` setting."""


def backoff_seconds(retry: int, *, base: float, cap: float, jitter: float) -> float:
    """The wait before retry number `retry` (1-based): ``base * 2^(retry-1) + jitter``, capped."""
    return min(cap, base * 2.0 ** (retry - 1) + jitter)


def _is_transient(error: BaseException) -> bool:
    if not isinstance(error, UpstreamError) or isinstance(
        error, AuthenticationError | ArtifactExpired | CircuitOpen | UntrustedAnswer
    ):
        return False
    return error.status is None or error.status >= 500


def retry_wait(
    error: BaseException, retry: int, settings: ResilienceSettings, *, jitter: float = 0.0
) -> float | None:
    """Seconds to wait before retry number `retry` after `error`, or None: do not retry."""
    if retry > settings.max_retries:
        return None
    if isinstance(error, RateLimited):
        wait = max(0.0, error.retry_after)
        return wait if wait <= settings.max_delay_seconds else None
    if _is_transient(error):
        return backoff_seconds(
            retry, base=settings.base_delay_seconds, cap=settings.max_delay_seconds, jitter=jitter
        )
    return None


def breaker_outcome(error: BaseException) -> CallOutcome:
    """Whether a call that raised `error` counts against its operation's circuit."""
    if isinstance(error, RateLimited | AuthenticationError) or _is_transient(error):
        return CallOutcome.FAILURE
    return CallOutcome.NEUTRAL


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


class _RetryHook:
    """stamina's ``on`` hook for one call: decides each retry, logs it and names its wait."""

    def __init__(self, operation: str, settings: ResilienceSettings) -> None:
        self._operation = operation
        self._settings = settings
        self._retries = 0

    def __call__(self, error: Exception) -> bool | float:
        retry = self._retries + 1
        jitter = random.uniform(0, self._settings.base_delay_seconds)  # noqa: S311 - not crypto
        wait = retry_wait(error, retry, self._settings, jitter=jitter)
        if wait is None:
            if isinstance(error, RateLimited) and retry <= self._settings.max_retries:
                logger.warning(
                    f"⚠️ [CLOUD-SYNC] {self._operation} rate limited for {error.retry_after:.0f}s, "
                    f"more than max_delay_seconds ({self._settings.max_delay_seconds:.0f}s): "
                    "not waiting; the next cycle will try again"
                )
            return False
        self._retries = retry
        logger.bind(operation=self._operation, retry=retry, delay=wait).warning(
            f"⚠️ [CLOUD-SYNC] {self._operation} failed ({_reason(error)}); "
            f"retry {retry}/{self._settings.max_retries} in {wait:.1f}s"
        )
        return wait


async def _attempt(operation: str, func: Callable[[], Awaitable[T]], limit: float | None) -> T:
    """Run one attempt within `limit` seconds; a timeout is a connection-level failure."""
    try:
        async with asyncio.timeout(limit):
            return await func()
    except TimeoutError as error:
        after = f" after {limit:g}s" if limit is not None else ""
        raise UpstreamError(f"{operation} timed out{after}", status=None) from error


class ProductionResilienceService:
    """Runs upstream calls with retries and a per-operation circuit breaker.

    Meant for one event loop: breakers are plain objects, changed only between awaits.
    """

    def __init__(
        self,
        settings: ResilienceSettings,
        on_state_change: Callable[[str, str], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._on_state_change = on_state_change
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    async def call(
        self,
        operation: str,
        func: Callable[[], Awaitable[T]],
        *,
        # Per attempt, not per call; the name is the contract callers use.
        timeout: float | Literal[_Default.HTTP_TIMEOUT] | None = HTTP_TIMEOUT,  # noqa: ASYNC109
    ) -> T:
        """Run `func` under `operation`'s breaker, retrying transient failures.

        `timeout` bounds each attempt (default ``http_timeout_seconds``). Pass None for a
        streaming download, whose total time grows with its size, and bound it by a read
        timeout between chunks instead. Raises CircuitOpen, without calling `func`, while
        the operation's circuit is open; otherwise the last attempt's exception.
        """
        limit = self._settings.http_timeout_seconds if timeout is HTTP_TIMEOUT else timeout
        breaker = self._breaker(operation)
        trial = breaker.acquire()
        outcome = CallOutcome.NEUTRAL  # also what a cancelled call leaves
        try:
            result = await self._with_retries(operation, func, limit)
        except Exception as error:
            outcome = breaker_outcome(error)
            raise
        else:
            outcome = CallOutcome.SUCCESS
            return result
        finally:
            breaker.settle(trial, outcome)

    def breaker_state(self, operation: str) -> str:
        """``closed``, ``open`` or ``half_open``; an operation never called is closed."""
        breaker = self._breakers.get(operation)
        return (breaker.state if breaker is not None else CircuitState.CLOSED).value

    def breaker_states(self) -> dict[str, str]:
        """The state of every operation called so far, by operation name."""
        return {name: breaker.state.value for name, breaker in sorted(self._breakers.items())}

    async def _with_retries(
        self, operation: str, func: Callable[[], Awaitable[T]], limit: float | None
    ) -> T:
        attempts = stamina.retry_context(
            on=_RetryHook(operation, self._settings),
            attempts=self._settings.max_retries + 1,
            timeout=None,  # the attempts and their waits are bounded; no overall deadline
        )
        async for attempt in attempts:
            with attempt:
                return await _attempt(operation, func, limit)
        raise AssertionError("unreachable: stamina re-raises the last failure")

    def _breaker(self, operation: str) -> CircuitBreaker:
        breaker = self._breakers.get(operation)
        if breaker is None:
            breaker = CircuitBreaker(
                operation,
                failure_threshold=self._settings.breaker_failure_threshold,
                open_seconds=self._settings.breaker_open_seconds,
                clock=self._clock,
                on_transition=self._report,
            )
            self._breakers[operation] = breaker
        return breaker

    def _report(self, transition: Transition) -> None:
        operation, state = transition.operation, transition.state
        open_for = f"calls fail fast for {self._settings.breaker_open_seconds:g}s"
        if state is CircuitState.OPEN and transition.previous is CircuitState.HALF_OPEN:
            logger.error(
                f"❌ [CLOUD-SYNC] Circuit for {operation} reopened: the trial call failed; "
                f"{open_for}"
            )
        elif state is CircuitState.OPEN:
            logger.error(
                f"❌ [CLOUD-SYNC] Circuit for {operation} opened after "
                f"{transition.failures} failures; {open_for}"
            )
        elif state is CircuitState.HALF_OPEN:
            logger.info(
                f"🔄 [CLOUD-SYNC] Circuit for {operation} half-open: letting one trial call through"
            )
        else:
            logger.success(
                f"✅ [CLOUD-SYNC] Circuit for {operation} closed: the trial call succeeded"
            )
        if self._on_state_change is not None:
            try:
                self._on_state_change(operation, state.value)
            except Exception:
                # Monitoring must never change what a call returns or raises.
                logger.exception(f"❌ [CLOUD-SYNC] on_state_change failed for {operation}")
