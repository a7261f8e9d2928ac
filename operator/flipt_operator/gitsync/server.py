"""The sidecar's HTTP server: /healthz, /readyz, /status and /metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..models.sync import SidecarStatus
from .loop import StorageSync
from .metrics import SyncMetrics


def sidecar_status(syncs: Sequence[StorageSync]) -> SidecarStatus:
    return SidecarStatus(pod=os.environ.get("POD_NAME"), storages=[s.current_state() for s in syncs])


def make_app(syncs: Sequence[StorageSync], metrics: SyncMetrics) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        # Liveness: no storage's cycle is running past its deadline + margin (a stuck loop).
        stuck = {
            s.storage.name: f"sync cycle running for {running:.0f}s (syncTimeout {s.sync_timeout:g}s + margin "
            f"{s.stuck_margin:g}s)"
            for s in syncs
            if (running := s.stuck_for()) is not None
        }
        if stuck:
            return web.json_response({"status": "stuck", "storages": stuck}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        # Readiness of the pod, not of the storage: a strict storage's pod keeps serving a published
        # revision through a short outage (staleAfter), though its status says not Ready at once.
        not_ready = {
            s.storage.name: (f"last successful fetch older than {s.stale_after:g}s: " if s.served else "")
            + (s.state.last_error or "not synced yet")
            for s in syncs if not s.serves_pod()
        }
        if not_ready:
            return web.json_response({"ready": False, "storages": not_ready}, status=503)
        return web.json_response({"ready": True})

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(sidecar_status(syncs).to_api())

    async def metrics_page(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_page)
    return app
