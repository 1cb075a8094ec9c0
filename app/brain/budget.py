"""What a model must meet before it serves, and the means to stop a validation that does not.

A validation runs its warm-up under ONNX Runtime ``RunOptions`` that a timer terminates at the
deadline (``brain.validation_timeout_seconds``), and that :meth:`Validations.stop_all` terminates
when the host stops. ONNX Runtime checks the flag between nodes, also inside loops, so even a
model built to run for minutes ends within milliseconds of either (measured: a 200,000-step
loop stopped 1 ms after its 0.3 s deadline). Chosen over a validation in a child process with
resource limits, which would build every candidate's session twice: once in the child, once
to serve; memory is bounded in process by the arena of ``runtime.set_memory_budget``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from app.brain.runtime import memory_budget_set
from app.errors import ModelError

LATENCY_RUNS = 25  # single-row runs timed after the warm-up; the p99 is compared with the budget


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits a candidate must meet (None: not checked)."""

    timeout_seconds: float | None = None
    max_decision_seconds: float | None = None


class Validations:
    """The validations in flight, each stoppable at its deadline or all at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Any] = set()
        self._stopping = False

    def stop_all(self) -> None:
        """Terminate every validation in flight, and any started from now on."""
        with self._lock:
            self._stopping = True
            for options in self._live:
                options.terminate = True

    @contextmanager
    def running(self, budget: Budget, started: float) -> Iterator[Any]:
        """RunOptions for the warm-up of a validation that `started` (monotonic) at that time.

        Raises ModelError saying which limit stopped it when the runs were terminated.
        """
        options = ort.RunOptions()
        options.log_severity_level = 4
        if memory_budget_set():
            # What a candidate's warm-up took from the shared arena goes back once it is done
            # (a refused graph that asked for gigabytes must not leave them resident). Without
            # the shared arena a session's memory goes with the session; shrinking after every
            # run would only cost time (measured: about 30 ms a swap of a 300 MB model).
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        timer = None
        if budget.timeout_seconds is not None:
            left = max(0.0, started + budget.timeout_seconds - time.monotonic())
            timer = threading.Timer(left, setattr, args=(options, "terminate", True))
            timer.daemon = True
        with self._lock:
            options.terminate = self._stopping
            self._live.add(options)
        if timer is not None:
            timer.start()
        try:
            yield options
        except ModelError:
            if not options.terminate:
                raise
            if self._stopping:
                raise ModelError("validation stopped: the host is stopping") from None
            raise ModelError(
                f"validation stopped after {time.monotonic() - started:.1f} s: over "
                f"brain.validation_timeout_seconds ({budget.timeout_seconds:g} s)"
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._live.discard(options)


def check_construction_time(budget: Budget, started: float) -> None:
    """Refuse a model whose session alone took longer than the whole validation may."""
    elapsed = time.monotonic() - started
    if budget.timeout_seconds is not None and elapsed > budget.timeout_seconds:
        raise ModelError(
            f"building the session took {elapsed:.1f} s: over "
            f"brain.validation_timeout_seconds ({budget.timeout_seconds:g} s)"
        )


def check_latency(budget: Budget, seconds: float) -> None:
    if budget.max_decision_seconds is not None and seconds > budget.max_decision_seconds:
        raise ModelError(
            f"a decision takes {seconds * 1e3:.1f} ms (p99 of {LATENCY_RUNS} runs): over "
            f"brain.max_decision_ms ({budget.max_decision_seconds * 1e3:g} ms)"
        )
