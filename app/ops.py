"""The ops HTTP server (default 127.0.0.1:8080): health, readiness, metrics, status, webhook,
and an authenticated rollback.

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
                            ``{"slot": ..., "to": <backup name>}``; 404 when no token is set
==========================  =====================================================================
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web
from loguru import logger

from app.install.installer import ModelInstaller
from app.services.installer import ArtifactInstaller
from app.services.monitoring import ProductionMonitoringService
from app.services.resilience import ProductionResilienceService
from app.services.state import StateStore
from app.services.webhook import WebhookDispatcher
from app.settings import Settings
from app.status import status_report

MIB = 1 << 20


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
    ) -> None:
        self._settings = settings
        self._models = models
        self._brain = models.brain
        self._state = state
        self._installer = installer
        self._webhooks = webhooks
        self._monitoring = monitoring
        self._resilience = resilience
        self._admin_token = settings.ops.admin_token.get_secret_value()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=int(self._settings.ops.max_webhook_body_mb * MIB))
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                web.get("/status", self._status),
                web.post("/webhooks/github", self._webhook),
                web.post("/admin/rollback", self._rollback),
            ]
        )
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.ops.host, self._settings.ops.port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._settings.ops.port
        logger.info(f"🌐 [OPS] Serving on http://{self._settings.ops.host}:{self.port}")

    async def stop(self) -> None:
        await self._webhooks.drain()
        if self._runner is not None:
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
        return None

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
        report = await asyncio.to_thread(status_report, self._models, self._state)
        report["breakers"] = self._resilience.breaker_states() if self._resilience else {}
        return web.json_response(report)

    # -- webhook -------------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        if not self._webhooks.enabled:
            raise web.HTTPNotFound(text="webhook endpoint is off (ops.webhook_secret is empty)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        if not self._webhooks.verify(body, request.headers.get("X-Hub-Signature-256")):
            return web.json_response({"error": "missing or wrong signature"}, status=401)
        status, answer = self._webhooks.accept(
            request.headers.get("X-GitHub-Delivery", ""),
            request.headers.get("X-GitHub-Event", ""),
            body,
        )
        return web.json_response(answer, status=status)

    # -- admin ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").encode()
        return header.startswith("Bearer ") and hmac.compare_digest(
            given, self._admin_token.encode()
        )

    async def _rollback(self, request: web.Request) -> web.Response:
        if not self._admin_token:
            raise web.HTTPNotFound(text="admin endpoints are off (ops.admin_token is empty)")
        if not self._authorized(request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        body: Any = {}
        if request.can_read_body:
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        result = await self._installer.roll_back(body.get("slot"), body.get("to"))
        if not result.ok:
            return web.json_response({"ok": False, "reason": result.reason}, status=409)
        versions = {slot: model.version for slot, model in result.installed.items()}
        return web.json_response({"ok": True, "reason": result.reason, "versions": versions})
