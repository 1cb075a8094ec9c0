"""Whether the decision job is deciding: what ``/readyz`` says about it (pure, clock injected)."""

from __future__ import annotations

import time
from collections.abc import Callable

FAILURES_BEFORE_UNREADY = 3
STALL_TICKS = 5  # no decision for this many ticks (and at least STALL_FLOOR_SECONDS): unready
STALL_FLOOR_SECONDS = 10.0


class DecisionHealth:
    """The decision job reports each decision or failure here; readiness reads it."""

    def __init__(self, tick_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall_seconds = max(STALL_TICKS * tick_seconds, STALL_FLOOR_SECONDS)
        self._clock = clock
        self._since: float | None = None  # None until a decision job runs
        self._failures = 0
        self._last_error = ""
        self.decisions = 0
        self.errors = 0

    def started(self) -> None:
        """A decision job now runs: from here on, a stall is a problem."""
        self._since = self._clock()

    def stopped(self) -> None:
        self._since = None

    def decided(self) -> None:
        self.decisions += 1
        self._failures = 0
        self._since = self._clock()

    def failed(self, error: BaseException) -> bool:
        """Count a failed decision; True when it starts a streak (worth a log line)."""
        self.errors += 1
        self._failures += 1
        self._last_error = f"{type(error).__name__}: {error}"
        return self._failures == 1

    def problem(self) -> str | None:
        """Why decisions are not being made, or None while they are (or no job runs)."""
        if self._since is None:
            return None
        if self._failures >= FAILURES_BEFORE_UNREADY:
            return f"the last {self._failures} decisions failed ({self._last_error})"
        quiet = self._clock() - self._since
        if quiet > self._stall_seconds:
            return f"no decision for {quiet:.0f} s"
        return None
