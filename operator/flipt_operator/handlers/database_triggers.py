"""Triggers of the database lifecycle: the Job controller's reports on our Jobs, changed import
documents, and the periodic re-check. Each asks for a namespace pass (`servers.request`); the
lifecycle itself (`database.database_gate`) runs inside the pass. Kept apart from database.py so
that servers -> database stays one way (an import-linter contract checks it)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from .. import GROUP, VERSION
from ..builders.database_jobs import LABEL_STORAGE
from ..models.kinds import STORAGE
from .context import Context
from .database import MANAGED_BY_LABELS, RECHECK_SECONDS
from .metrics import WATCH_EVENTS
from .servers import EVERYTHING, Scope, request


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY_LABELS)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def database_job_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """The Job controller reported progress on a migration or import Job."""
    if memo.servers.listed.changed(event) and memo.servers.changed(event):
        storage = (((event.get("object") or {}).get("metadata") or {}).get("labels") or {}).get(LABEL_STORAGE)
        request(memo.servers, namespace, Scope.of(storages=[storage]) if storage else EVERYTHING)


@kopf.index(GROUP, VERSION, STORAGE.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def storages_by_import_config_map(namespace: str, name: str, spec: kopf.Spec,
                                  **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, ConfigMap name) -> the storages importing from it (spec.database.import)."""
    ref = (((spec.get("database") or {}).get("import") or {}).get("configMapRef") or {}).get("name")
    return {(namespace, ref): name} if ref else {}


@kopf.on.event("", "v1", "configmaps")  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def import_config_map_event(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo,
                            storages_by_import_config_map: kopf.Index, **_: Any) -> None:
    """An import document changed (or appeared, or went): a pass validates it and starts its Job
    at once, rather than at the next re-check. Other ConfigMaps (ours included) are ignored."""
    if (namespace, name) not in storages_by_import_config_map:
        if event.get("type") is not None:  # a (re-)listing is not a decision worth counting
            WATCH_EVENTS.labels("ConfigMap", "ignored").inc()
        return
    if not memo.servers.listed.changed(event):
        return  # the listing at start (the startup passes read every import) or unchanged
    request(memo.servers, namespace, Scope.of(storages=storages_by_import_config_map.get((namespace, name), [])))
    WATCH_EVENTS.labels("ConfigMap", "pass").inc()


async def database_recheck(ctx: Context) -> None:
    """Nothing in the API announces a database coming up, a schema migrated by hand or Redis
    back: re-check the namespaces with database storage periodically. (A background task,
    not a kopf timer: timers put a finalizer on every object they run for.)"""
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        for namespace in sorted(ctx.database_namespaces):
            if not await asyncio.to_thread(ctx.standby, namespace):
                scope = Scope.of(storages=ctx.objects.storages_with(namespace, "database"))
                await asyncio.to_thread(request, ctx, namespace, scope)
