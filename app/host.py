"""The long-running bot host: trades on every bar of its market feed, notices models installed
by other processes, and stops cleanly on SIGINT/SIGTERM.

Each background job is a loop that sleeps on the stop event, so a stop request ends it at the
next boundary instead of cancelling it mid-operation: a swap that has started finishes, and no
file is left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from loguru import logger

from app.brain.brain import TradingBrain
from app.install.installer import ModelInstaller
from app.trading.loop import TradingLoop

STOP_GRACE_SECONDS = 30.0


class BotHost:
    """Background jobs around a started brain, run until `stop()`."""

    def __init__(
        self,
        models: ModelInstaller,
        *,
        watch_seconds: float,
        trading: TradingLoop | None = None,
    ) -> None:
        self._models = models
        self._brain: TradingBrain = models.brain
        self._watch_seconds = watch_seconds
        self._stop = asyncio.Event()
        self._jobs: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "model-watch": self._watch_models,
        }
        if trading is not None:
            self._jobs["trading"] = lambda: trading.run(self.sleep)

    def add_job(self, name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `job` beside the others; it should return soon after `stopping` is set."""
        self._jobs[name] = job

    @property
    def stopping(self) -> asyncio.Event:
        return self._stop

    def stop(self) -> None:
        self._stop.set()
        self._brain.stop_validations()  # a validation in flight ends now, not at its deadline

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when the host is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return self._stop.is_set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        tasks = [asyncio.create_task(job(), name=name) for name, job in self._jobs.items()]
        logger.info("🌐 [HOST] Running; stop with Ctrl-C or SIGTERM")
        try:
            await self._stop.wait()
        finally:
            logger.info("🌐 [HOST] Stopping: letting running work finish")
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            logger.info("🌐 [HOST] Stopped")

    async def _watch_models(self) -> None:
        while not await self.sleep(self._watch_seconds):
            await self._models.refresh_from_disk()
