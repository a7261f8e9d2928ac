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
from ..clients.kube import api_error_text
from ..models.kinds import STORAGE
from ..models.sync import SidecarStatus, StorageSyncState
from .context import Context
from .servers import EVERYTHING, MANAGED_BY, Scope, request

log = logging.getLogger(__name__)
POLL_SECONDS = float(os.environ.get("FLIPT_OPERATOR_SYNC_POLL_SECONDS", "5"))
POLL_TIMEOUT_SECONDS = float(os.environ.get("FLIPT_OPERATOR_SYNC_POLL_TIMEOUT_SECONDS", "3"))
# Requests to sidecars in flight at once, across all namespaces.
POLL_CONCURRENCY = int(os.environ.get("FLIPT_OPERATOR_SYNC_POLL_CONCURRENCY", "32"))


@kopf.on.event(GROUP, VERSION, STORAGE.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def storage_event(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    spec = (event.get("object") or {}).get("spec") or {}
    if spec.get("git"):
        memo.servers.git_namespaces.add(namespace)
    if spec.get("database"):
        memo.servers.database_namespaces.add(namespace)
    seen = memo.servers.objects.observe(event)  # every event: our status writes keep it current
    changed = memo.servers.changed(event)
    if seen.relisted:
        request(memo.servers, namespace, EVERYTHING)
    elif changed and not seen.known:
        request(memo.servers, namespace, Scope.of(storages=[name]))


def _sidecar_port(pod: dict[str, Any]) -> int | None:
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("name") == SIDECAR_NAME:
                return int(port["containerPort"])
    return None


def sidecar_status_url(ip: str, port: int) -> str:
    """The sidecar's /status URL; an IPv6 pod IP goes in brackets (`http://[fd00::1]:8081/status`)."""
    host = f"[{ip}]" if ":" in ip else ip  # only IPv6 addresses contain colons
    return f"http://{host}:{port}/status"


async def _read_sidecar(session: aiohttp.ClientSession, limit: asyncio.Semaphore, namespace: str,
                        name: str, url: str) -> SidecarStatus | None:
    async with limit:
        try:
            async with session.get(url) as response:
                return SidecarStatus.model_validate(await response.json())
        except (TimeoutError, aiohttp.ClientError, ValueError, ValidationError) as exc:
            log.info("no sync report from pod %s/%s: %s", namespace, name, type(exc).__name__)
            return None


async def read_namespace_reports(
    ctx: Context, session: aiohttp.ClientSession, namespace: str, limit: asyncio.Semaphore | None = None,
) -> dict[str, list[tuple[str, StorageSyncState]]]:
    """Every sidecar's /status in the namespace, read side by side (at most `limit` requests at
    once), so a round takes about one request timeout however many pods do not answer."""
    limit = limit or asyncio.Semaphore(POLL_CONCURRENCY)
    pods = await asyncio.to_thread(ctx.kube.list_pods, namespace, MANAGED_BY)
    targets: list[tuple[str, str]] = []
    for pod in pods:
        ip, port = (pod.get("status") or {}).get("podIP"), _sidecar_port(pod)
        if not ip or not port or pod["metadata"].get("deletionTimestamp"):
            continue
        targets.append((pod["metadata"]["name"], sidecar_status_url(ip, port)))
    documents = await asyncio.gather(*(_read_sidecar(session, limit, namespace, name, url) for name, url in targets))
    reports: dict[str, list[tuple[str, StorageSyncState]]] = {}
    for (name, _), document in zip(targets, documents, strict=True):
        for state in document.storages if document is not None else ():
            reports.setdefault(state.storage, []).append((name, state))
    for items in reports.values():
        items.sort(key=lambda item: item[0])
    return reports


async def _poll_namespace(ctx: Context, session: aiohttp.ClientSession, namespace: str,
                          limit: asyncio.Semaphore) -> None:
    try:
        if await asyncio.to_thread(ctx.standby, namespace):
            return
        reports = await read_namespace_reports(ctx, session, namespace, limit)
        changed = ctx.reports.replace_namespace(namespace, reports)
        if changed is None:  # the first read: every git storage's reports are news
            changed = ctx.objects.storages_with(namespace, "git")
        if changed:
            await asyncio.to_thread(request, ctx, namespace, Scope.of(storages=changed))
    except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
        log.warning("sync poll of %s failed: %s", namespace, api_error_text(exc))


async def sync_poller(ctx: Context) -> None:
    """Every POLL_SECONDS: read every git namespace's sidecars (namespaces side by side, within
    one bound on requests in flight); a changed report re-plans its namespace."""
    timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_SECONDS)
    limit = asyncio.Semaphore(POLL_CONCURRENCY)  # shared by every namespace of a round
    # No connection limit of aiohttp's own: waiting for its pool would count against the timeout.
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        while True:
            await asyncio.gather(*(_poll_namespace(ctx, session, namespace, limit)
                                   for namespace in sorted(ctx.git_namespaces)))
            await asyncio.sleep(POLL_SECONDS)
