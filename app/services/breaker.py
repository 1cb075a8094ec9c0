"""A circuit breaker for one upstream operation: a small, pure state machine over a clock.

::

    closed --(threshold consecutive failed calls)--> open --(open_seconds pass)--> half_open
    half_open --(the one trial call succeeds)--> closed
    half_open --(the trial call fails)--> open (for another open_seconds)

Written by hand rather than taken from PyPI: the asyncio breakers there are unmaintained
(aiobreaker 2021, aiocircuitbreaker 2022) or have no asyncio support (pybreaker,
circuitbreaker), and purgatory, the maintained asyncio one, lets every caller through while
half-open and reads the wall clock (``time.time``), so it can neither guarantee exactly one
trial call nor be tested without sleeping. The whole machine is about sixty lines.
This module does no I/O and never awaits, so on one event loop it needs no lock: between
``acquire`` and ``settle`` the caller may await, but each method runs to completion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum, StrEnum, auto
from typing import TYPE_CHECKING

from app.errors import UpstreamError

if TYPE_CHECKING:
    from collections.abc import Callable


class CircuitState(StrEnum):
    """Where a breaker is; the values are what status and metrics report."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CallOutcome(Enum):
    """How a call admitted by the breaker ended, as far as the breaker is concerned."""

    SUCCESS = auto()
    FAILURE = auto()
    # The call ended without telling us whether the upstream is healthy (cancelled, or a
    # failure that is not the upstream's): it changes no count and frees the trial slot.
    NEUTRAL = auto()


class CircuitOpen(UpstreamError):
    """The breaker for an operation is refusing calls; nothing was sent upstream."""

    def __init__(self, operation: str, retry_in: float) -> None:
        if retry_in > 0:
            when = f"the next trial call is allowed in {retry_in:.0f}s"
        else:
            when = "its trial call is in flight; try again shortly"
        super().__init__(f"circuit for {operation} is open: {when}", status=None)
        self.operation = operation
        self.retry_in = retry_in


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker moved from `previous` to `state`; `failures` counts consecutive failed calls."""

    operation: str
    previous: CircuitState
    state: CircuitState
    failures: int


class CircuitBreaker:
    """Counts consecutive failed calls of one operation and fails fast while it is open."""

    def __init__(
        self,
        operation: str,
        *,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.operation = operation
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._on_transition = on_transition
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        """The current state; reading it moves an expired open circuit to half-open."""
        if self._state is CircuitState.OPEN and self._seconds_until_trial() <= 0:
            self._enter(CircuitState.HALF_OPEN)
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failed calls counted since the circuit last closed."""
        return self._failures

    def acquire(self) -> bool:
        """Admit a call, or raise CircuitOpen; True when the call is the half-open trial."""
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        raise CircuitOpen(self.operation, self._seconds_until_trial())

    def settle(self, trial: bool, outcome: CallOutcome) -> None:
        """Record how a call admitted by `acquire` ended (`trial` is what acquire returned)."""
        if trial:
            self._settle_trial(outcome)
        elif self._state is CircuitState.CLOSED:
            # Calls admitted before the circuit opened may finish while it is open or
            # half-open; only the trial speaks for the upstream then, so they are ignored.
            self._settle_regular(outcome)

    def _settle_trial(self, outcome: CallOutcome) -> None:
        self._trial_in_flight = False
        if outcome is CallOutcome.SUCCESS:
            self._failures = 0
            self._enter(CircuitState.CLOSED)
        elif outcome is CallOutcome.FAILURE:
            self._failures += 1
            self._open()

    def _settle_regular(self, outcome: CallOutcome) -> None:
        if outcome is CallOutcome.SUCCESS:
            self._failures = 0
        elif outcome is CallOutcome.FAILURE:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._enter(CircuitState.OPEN)

    def _seconds_until_trial(self) -> float:
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_seconds - self._clock())

    def _enter(self, state: CircuitState) -> None:
        previous, self._state = self._state, state
        if self._on_transition is not None:
            self._on_transition(Transition(self.operation, previous, state, self._failures))
