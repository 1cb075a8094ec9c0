"""GitHub ``workflow_run`` webhook deliveries: verified, judged, deduplicated, queued.

A delivery that passes goes straight to its run (no listing), so a new model is live about one
download and one load after GitHub calls. The work runs on one background worker: a delivery
that arrives during a sync waits in the queue (not lost), and the same delivery or the same
run is never queued twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from loguru import logger

from app.services.github_types import WorkflowRun
from app.services.outcome import CycleOutcome
from app.services.selection import SelectionPolicy, why_run_ineligible
from app.services.sync import CloudModelSynchronizationService
from app.settings import Settings

SIGNATURE_PREFIX = "sha256="
REMEMBERED_DELIVERIES = 1000
_SIGNATURE_SHAPE = re.compile(r"sha256=[0-9a-fA-F]{64}")


def signature_of(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for `body`."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def looks_signed(header: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` has a signature's shape: checked before reading a body."""
    return header is not None and _SIGNATURE_SHAPE.fullmatch(header) is not None


def signature_is_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of ``X-Hub-Signature-256`` against the raw body."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(signature_of(secret, body), header)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a delivery: the run to sync, or why it is ignored."""

    run: WorkflowRun | None
    reason: str


def judge_delivery(event: str, payload: Any, policy: SelectionPolicy) -> Verdict:  # noqa: PLR0911 - a guard clause per rule
    """Pure: does this delivery announce a run whose artifacts we should install?"""
    if event != "workflow_run":
        return Verdict(None, f"event {event!r} is not workflow_run")
    if not isinstance(payload, dict) or not isinstance(payload.get("workflow_run"), dict):
        return Verdict(None, "payload has no workflow_run object")
    if payload.get("action") != "completed":
        return Verdict(None, "action is not completed")
    repository = payload.get("repository")
    name = repository.get("full_name") if isinstance(repository, dict) else None
    if not isinstance(name, str) or name.lower() != policy.repository.lower():
        return Verdict(None, f"repository is not {policy.repository}")
    try:
        run = WorkflowRun.from_api(payload["workflow_run"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return Verdict(None, f"workflow_run is malformed ({type(error).__name__})")
    reason = why_run_ineligible(run, policy)
    if reason is not None:
        return Verdict(None, f"run {run.id}: {reason}")
    return Verdict(run, f"run {run.id} queued")


class WebhookDispatcher:
    """Accepts verified deliveries and runs their syncs one at a time in the background."""

    def __init__(self, settings: Settings, sync: CloudModelSynchronizationService) -> None:
        self._secret = settings.ops.webhook_secret.get_secret_value().encode()
        self._policy = SelectionPolicy.from_settings(settings.github)
        self._sync = sync
        self._deliveries: OrderedDict[str, None] = OrderedDict()
        self._queued: set[tuple[int, int]] = set()
        self._queue: asyncio.Queue[tuple[str, WorkflowRun]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._hosted = False  # a host job runs the queue (run_forever): no worker of our own
        self.completed = 0

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def verify(self, body: bytes, signature: str | None) -> bool:
        return self.enabled and signature_is_valid(self._secret, body, signature)

    def accept(self, delivery: str, event: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Judge a verified delivery; (HTTP status, JSON answer). Never blocks."""
        if event == "ping":
            return 200, {"pong": True}
        if delivery and delivery in self._deliveries:
            return 200, {"queued": False, "reason": f"delivery {delivery} already received"}
        if delivery:
            self._deliveries[delivery] = None
            while len(self._deliveries) > REMEMBERED_DELIVERIES:
                self._deliveries.popitem(last=False)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return 400, {"queued": False, "reason": "body is not JSON (or nested too deep)"}
        verdict = judge_delivery(event, payload, self._policy)
        if verdict.run is None:
            logger.info(f"🌐 [CLOUD-SYNC] Webhook delivery {delivery} ignored: {verdict.reason}")
            return 200, {"queued": False, "reason": verdict.reason}
        key = (verdict.run.id, verdict.run.run_attempt)
        if key in self._queued:
            return 200, {"queued": False, "reason": f"run {verdict.run.id} is already queued"}
        self._queued.add(key)
        self._queue.put_nowait((delivery, verdict.run))
        self._ensure_worker()
        logger.info(f"🌐 [CLOUD-SYNC] Webhook delivery {delivery}: {verdict.reason}")
        return 202, {"queued": True, "run_id": verdict.run.id}

    def _ensure_worker(self) -> None:
        if self._hosted:
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="webhook-worker")

    async def _work(self) -> None:
        while not self._queue.empty():
            await self._handle(*self._queue.get_nowait())

    async def _handle(self, delivery: str, run: WorkflowRun) -> None:
        outcome = CycleOutcome.FAILED
        try:
            report = await self._sync.synchronize_run(run)
            outcome = report.outcome
            logger.info(f"🌐 [CLOUD-SYNC] Webhook sync of run {run.id}: {outcome}")
        except Exception as error:  # one bad delivery must not stop the worker
            logger.opt(exception=error).error(f"❌ [CLOUD-SYNC] Webhook sync failed: {error}")
        finally:
            if outcome in {CycleOutcome.FAILED, CycleOutcome.SKIPPED}:
                self._forget(delivery)
            self._queued.discard((run.id, run.run_attempt))
            self.completed += 1

    def _forget(self, delivery: str) -> None:
        """Not done: a redelivery (same X-GitHub-Delivery) may try again."""
        self._deliveries.pop(delivery, None)

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """The host's webhook job: queued syncs one at a time, until the host stops.

        A sync under way when the host stops finishes within the host's grace; what is still
        queued is dropped and forgotten, so GitHub's redelivery of it is accepted later.
        """
        self._hosted = True
        stopped = asyncio.create_task(stopping.wait())
        try:
            while not stopping.is_set():
                taken = asyncio.create_task(self._queue.get())
                await asyncio.wait({taken, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not taken.done():
                    taken.cancel()
                    break
                await self._handle(*taken.result())
        finally:
            stopped.cancel()
            while not self._queue.empty():
                delivery, run = self._queue.get_nowait()
                self._forget(delivery)
                self._queued.discard((run.id, run.run_attempt))
                logger.info(f"🌐 [CLOUD-SYNC] Webhook sync of run {run.id} dropped: stopping")

    async def drain(self) -> None:
        """Wait for queued work to finish (tests, or a dispatcher no host job runs)."""
        if self._worker is not None:
            await asyncio.shield(self._worker)
