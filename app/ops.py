"""The ops HTTP server (default 127.0.0.1:8080): health, readiness, metrics, status, webhook,
and the authenticated admin actions (rollback, quarantine release).

==========================  =====================================================================
``GET /healthz``            200 while the process serves HTTP
``GET /readyz``             200 when the brain is loaded and every slot's file on disk is the one
                            serving; 503 otherwise (with the reason)
``GET /metrics``            Prometheus text format
``GET /status``             JSON: active models with provenance, backups, last sync, breakers
``POST /webhooks/github``   ``workflow_run`` deliveries, ``X-Hub-Signature-256`` checked; 404 when
                            ``ops.webhook_secret`` is empty; 401 on a missing or wrong signature;
                            413 over ``ops.max_webhook_body_mb``; 202 queued; 200 ignored/ping
``POST /admin/rollback``    ``Authorization: Bearer <ops.admin_token>``; JSON body optional:
                            ``{"slot": ..., "to": <backup name>}``; 404 when no token is set;
                            400 for a body that is not that (never 500)
``POST /admin/promote``     the candidate in shadow or canary becomes the champion now; body
                            optional: ``{"slot": ...}``; 409 when there is nothing to promote
``POST /admin/reject``      roll back and quarantine the candidate (or, with none, the champion)
==========================  =====================================================================

``POST /admin/quarantine/release`` (the admin token; body ``{"sha256": <a SHA-256, or a prefix of
at least 8 hex digits>}``) releases a quarantined model: 200 with the entry released, 404 when no
quarantined model has it (or no token is set), 400 for any other body or an ambiguous prefix,
409 while the quarantine file is unreadable.

``/admin/promote`` and ``/admin/reject`` also take the host's own control token, which it writes
to ``models/.sync/ops.json`` (mode 0600) while it listens: that is how ``python -m app promote``
and ``reject`` reach the running host without an ``ops.admin_token`` being set.

A webhook body is read before its signature can be checked, so what an unauthenticated client
can make the host hold is bounded: a request with no well-formed signature header is refused
before its body is read; a declared length over the limit is refused unread; at most
``ops.max_concurrent_bodies`` bodies are read at once (a request that waits longer than
``ops.body_timeout_seconds`` for its turn gets 503); and a body must arrive within
``ops.body_timeout_seconds`` (408).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import os
import secrets
from pathlib import PurePath
from typing import Any, TypeVar

from aiohttp import web
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.brain.health import DecisionHealth
from app.errors import AmbiguousSha256, OpsServerUnavailable, QuarantineUnreadable
from app.fsutil import write_bytes_atomically
from app.install.installer import ModelInstaller
from app.lifecycle.controller import LifecycleRefused, ModelLifecycle
from app.lifecycle.report import describe
from app.services.installer import ArtifactInstaller
from app.services.monitoring import ProductionMonitoringService
from app.services.resilience import ProductionResilienceService
from app.services.state import StateStore
from app.services.webhook import WebhookDispatcher, looks_signed
from app.settings import Settings
from app.status import status_report

MIB = 1 << 20
MAX_ADMIN_BODY_BYTES = 64 << 10


class RollbackRequest(BaseModel):
    """The body of ``POST /admin/rollback``: both keys optional, both strings when given."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    slot: str | None = None
    to: str | None = None

    @field_validator("to")
    @classmethod
    def _a_file_name(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or PurePath(value).name != value or "\\" in value or value[0] == "."
        ):
            raise ValueError("must be a backup file name, as /status lists them")
        return value


class SlotRequest(BaseModel):
    """The body of ``POST /admin/promote`` and ``/admin/reject``: the slot, optional."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    slot: str | None = None


class ReleaseRequest(BaseModel):
    """The body of ``POST /admin/quarantine/release``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sha256: str = Field(min_length=8, max_length=64, pattern="^[0-9a-fA-F]+$")


_Body = TypeVar("_Body", bound=BaseModel)


def _bad_request(error: str) -> web.Response:
    return web.json_response({"error": error}, status=400)


def _invalid(error: ValidationError) -> str:
    """A pydantic refusal in one line; the values sent are not echoed."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()
    ]
    return "invalid body: " + "; ".join(problems)


class OpsServer:
    """The aiohttp application and its runner; `start()` binds, `stop()` closes."""

    def __init__(
        self,
        settings: Settings,
        models: ModelInstaller,
        state: StateStore,
        installer: ArtifactInstaller,
        webhooks: WebhookDispatcher,
        *,
        monitoring: ProductionMonitoringService | None = None,
        resilience: ProductionResilienceService | None = None,
        decisions: DecisionHealth | None = None,
        lifecycle: ModelLifecycle | None = None,
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._control_token = secrets.token_urlsafe(32)
        self._control_file = models.layout.ops_file
        self._decisions = decisions
        self._models = models
        self._brain = models.brain
        self._state = state
        self._installer = installer
        self._webhooks = webhooks
        self._monitoring = monitoring
        self._resilience = resilience
        self._admin_token = settings.ops.admin_token.get_secret_value()
        self._bodies = asyncio.Semaphore(settings.ops.max_concurrent_bodies)
        self._max_body_bytes = int(settings.ops.max_webhook_body_mb * MIB)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body_bytes)
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                web.get("/status", self._status),
                web.post("/webhooks/github", self._webhook),
                web.post("/admin/rollback", self._rollback),
                web.post("/admin/quarantine/release", self._release),
                web.post("/admin/promote", self._promote),
                web.post("/admin/reject", self._reject),
            ]
        )
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        host, port = self._settings.ops.host, self._settings.ops.port
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            why = "in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
            raise OpsServerUnavailable(
                f"the ops server cannot listen on {host}:{port}: {why} "
                "(another host running? choose another ops.port, or OPS__PORT)"
            ) from None
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._settings.ops.port
        logger.info(f"🌐 [OPS] Serving on http://{self._settings.ops.host}:{self.port}")
        await asyncio.to_thread(self._publish_control)

    def _publish_control(self) -> None:
        """Tell this machine's CLI where the host listens, and its control token (0600)."""
        control = {
            "pid": os.getpid(),
            "url": f"http://{self._settings.ops.host}:{self.port}",
            "token": self._control_token,
        }
        try:
            self._control_file.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(self._control_file, json.dumps(control))
        except OSError as error:
            logger.warning(f"⚠️ [OPS] Cannot write {self._control_file}: {error}")

    def _withdraw_control(self) -> None:
        try:
            control = json.loads(self._control_file.read_bytes())
            if control.get("token") == self._control_token:
                self._control_file.unlink()
        except (OSError, ValueError):
            pass  # not there, or not ours: nothing to withdraw

    async def stop(self) -> None:
        await self._webhooks.drain()  # a no-op under a host, whose webhook job stops with it
        if self._runner is not None:
            await asyncio.to_thread(self._withdraw_control)
            await self._runner.cleanup()
            self._runner = None

    # -- probes --------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    def _not_ready_reason(self) -> str | None:
        if not self._brain.loaded:
            return "the brain has not loaded its models"
        for slot, why in self._models.disk_differences().items():
            return f"slot {slot}: {why}"
        for slot, why in self._brain.unhealthy.items():
            return f"slot {slot}: invalid output, holding ({why})"
        problem = self._decisions.problem() if self._decisions is not None else None
        return None if problem is None else f"decisions: {problem}"

    async def _readyz(self, _request: web.Request) -> web.Response:
        reason = await asyncio.to_thread(self._not_ready_reason)
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    # -- metrics and status --------------------------------------------------------------

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self._monitoring is None:
            raise web.HTTPNotFound(text="monitoring is not configured")
        if self._brain.loaded:  # the info metric follows what serves now, with provenance
            installed = await asyncio.to_thread(self._state.read_installed)
            for slot, model in self._brain.snapshot.models.items():
                provenance = installed.get(slot)
                run_id = (
                    provenance.run_id if provenance and provenance.sha256 == model.sha256 else None
                )
                self._monitoring.set_active_model(slot, model.version, model.sha256, run_id)
        body, content_type = self._monitoring.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def _status(self, _request: web.Request) -> web.Response:
        lifecycle = (
            self._lifecycle.report()
            if self._lifecycle is not None
            else describe(None, mode=self._settings.lifecycle.mode)
        )
        report = await asyncio.to_thread(status_report, self._models, self._state, lifecycle)
        report["breakers"] = self._resilience.breaker_states() if self._resilience else {}
        return web.json_response(report)

    # -- webhook -------------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        if not self._webhooks.enabled:
            raise web.HTTPNotFound(text="webhook endpoint is off (ops.webhook_secret is empty)")
        signature = request.headers.get("X-Hub-Signature-256")
        if not looks_signed(signature):
            return web.json_response({"error": "missing or wrong signature"}, status=401)
        declared = request.content_length
        if declared is not None and declared > self._max_body_bytes:
            return web.json_response({"error": "body too large"}, status=413)
        body = await self._read_unauthenticated(request)
        if isinstance(body, web.Response):
            return body
        if not self._webhooks.verify(body, signature):
            return web.json_response({"error": "missing or wrong signature"}, status=401)
        status, answer = self._webhooks.accept(
            request.headers.get("X-GitHub-Delivery", ""),
            request.headers.get("X-GitHub-Event", ""),
            body,
        )
        return web.json_response(answer, status=status)

    async def _read_unauthenticated(self, request: web.Request) -> bytes | web.Response:
        """The body, read a few requests at a time and within the body timeout; or the refusal."""
        limit = self._settings.ops.body_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                await self._bodies.acquire()
        except TimeoutError:
            return web.json_response(
                {"error": "too many bodies being received; try again"},
                status=503,
                headers={"Retry-After": "1", "Connection": "close"},
            )
        try:
            async with asyncio.timeout(limit):
                return await request.read()
        except TimeoutError:
            return web.json_response(
                {"error": f"body not received within {limit:g}s"},
                status=408,
                headers={"Connection": "close"},
            )
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        finally:
            self._bodies.release()

    # -- admin ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request, *, control: bool = False) -> bool:
        """The admin token; or, with `control`, the host's own control token too."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        given = header.removeprefix("Bearer ").encode()
        tokens = [self._admin_token] if self._admin_token else []
        if control:
            tokens.append(self._control_token)
        return any(hmac.compare_digest(given, token.encode()) for token in tokens)

    async def _promote(self, request: web.Request) -> web.Response:
        return await self._control(request, "promote")

    async def _reject(self, request: web.Request) -> web.Response:
        return await self._control(request, "reject")

    async def _control(self, request: web.Request, verb: str) -> web.Response:
        if not self._authorized(request, control=True):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        parsed = await _admin_body(request, SlotRequest)
        if isinstance(parsed, web.Response):
            return parsed
        if (unknown := self._unknown_slot(parsed.slot)) is not None:
            return unknown
        lifecycle = self._lifecycle
        if lifecycle is None:
            reason = "the lifecycle is off (lifecycle.mode is direct, or trading is disabled)"
            return web.json_response({"ok": False, "reason": reason}, status=409)
        try:
            if verb == "promote":
                message = lifecycle.promote(parsed.slot)
            else:
                message = await lifecycle.reject(parsed.slot)
        except LifecycleRefused as error:
            return web.json_response({"ok": False, "reason": str(error)}, status=409)
        return web.json_response({"ok": True, "reason": message})

    def _refused(self, request: web.Request) -> web.Response | None:
        """The answer to an admin request without the admin token (404 when admin is off)."""
        if not self._admin_token:
            reason = "admin endpoints are off (ops.admin_token is empty)"
            return web.json_response({"error": reason}, status=404)
        if not self._authorized(request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return None

    async def _rollback(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        parsed = await self._rollback_request(request)
        if isinstance(parsed, web.Response):
            return parsed
        result = await self._installer.roll_back(parsed.slot, parsed.to)
        if not result.ok:
            return web.json_response({"ok": False, "reason": result.reason}, status=409)
        versions = {slot: model.version for slot, model in result.installed.items()}
        return web.json_response({"ok": True, "reason": result.reason, "versions": versions})

    async def _release(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        parsed = await _admin_body(request, ReleaseRequest)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            released = await asyncio.to_thread(self._models.quarantine.release, parsed.sha256)
        except AmbiguousSha256 as error:
            return _bad_request(str(error))
        except QuarantineUnreadable as error:
            return web.json_response({"ok": False, "reason": str(error)}, status=409)
        if released is None:
            reason = f"no quarantined model's SHA-256 starts with {parsed.sha256.lower()}"
            return web.json_response({"ok": False, "reason": reason}, status=404)
        return web.json_response({"ok": True, "released": released.model_dump(mode="json")})

    async def _rollback_request(self, request: web.Request) -> RollbackRequest | web.Response:
        """The validated body of a rollback, or the 400 that says what is wrong with it."""
        parsed = await _admin_body(request, RollbackRequest)
        if isinstance(parsed, web.Response):
            return parsed
        return self._unknown_slot(parsed.slot) or parsed

    def _unknown_slot(self, slot: str | None) -> web.Response | None:
        """The 400 for a slot the settings do not name."""
        slots = self._settings.brain.slots
        if slot is None or slot in slots:
            return None
        shown = slot if slot.isprintable() and len(slot) < 100 else "?"
        return _bad_request(f"unknown slot {shown!r} (brain.slots: {', '.join(sorted(slots))})")


async def _admin_body(request: web.Request, kind: type[_Body]) -> _Body | web.Response:
    """An admin request's body (bounded; none is ``{}``) as `kind`, or the 400 saying why not."""
    raw = await request.content.read(MAX_ADMIN_BODY_BYTES + 1) if request.can_read_body else b""
    if len(raw) > MAX_ADMIN_BODY_BYTES:
        return _bad_request(f"body is over {MAX_ADMIN_BODY_BYTES} bytes")
    try:
        body: Any = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        return _bad_request("body is not JSON (or nested too deep)")
    if not isinstance(body, dict):
        return _bad_request("body must be a JSON object")
    try:
        return kind.model_validate(body)
    except ValidationError as error:
        return _bad_request(_invalid(error))
