"""FliptStorage: changes re-plan the namespace's servers; a poller reads the git-sync
sidecars' /status and brings it into status.sync (see docs/decisions.md for why the
operator reads the sidecars rather than the sidecars writing to the API)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION
from ..builders.server_manifests import SIDECAR_NAME
from ..models.kinds import STORAGE
from ..models.sync import SidecarStatus, StorageSyncState
from ..clients.kube import api_error_text
from .context import Context
from .servers import MANAGED_BY, request

log = logging.getLogger(__name__)
POLL_SECONDS = float(os.environ.get("FLIPT_OPERATOR_SYNC_POLL_SECONDS", "5"))


@kopf.on.event(GROUP, VERSION, STORAGE.plural)
def storage_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    spec = (event.get("object") or {}).get("spec") or {}
    if spec.get("git"):
        memo.servers.git_namespaces.add(namespace)
    if spec.get("database"):
        memo.servers.database_namespaces.add(namespace)
    if memo.servers.changed(event):
        request(memo.servers, namespace)


def _sidecar_port(pod: dict[str, Any]) -> int | None:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("name") == SIDECAR_NAME:
                return int(port["containerPort"])
    return None


async def read_namespace_reports(
    ctx: Context, session: aiohttp.ClientSession, namespace: str
) -> dict[str, list[tuple[str, StorageSyncState]]]:
    pods = await asyncio.to_thread(ctx.kube.list_pods, namespace, MANAGED_BY)
    reports: dict[str, list[tuple[str, StorageSyncState]]] = {}
    for pod in pods:
        ip, port = (pod.get("status") or {}).get("podIP"), _sidecar_port(pod)
        if not ip or not port or pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        try:
            async with session.get(f"http://{ip}:{port}/status") as response:
                document = SidecarStatus.model_validate(await response.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, ValidationError) as exc:
            log.info("no sync report from pod %s/%s: %s", namespace, name, type(exc).__name__)
            continue
        for state in document.storages:
            reports.setdefault(state.storage, []).append((name, state))
    for items in reports.values():
        items.sort(key=lambda item: item[0])
    return reports


async def sync_poller(ctx: Context) -> None:
    """Every POLL_SECONDS: read each git namespace's sidecars; a changed report re-plans it."""
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            for namespace in sorted(ctx.git_namespaces):
                try:
                    if await asyncio.to_thread(ctx.standby, namespace):
                        continue
                    reports = await read_namespace_reports(ctx, session, namespace)
                    if ctx.reports.replace_namespace(namespace, reports):
                        await asyncio.to_thread(request, ctx, namespace)
                except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
                    log.warning("sync poll of %s failed: %s", namespace, api_error_text(exc))
            await asyncio.sleep(POLL_SECONDS)
