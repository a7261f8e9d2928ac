"""FliptEnvironment: every change re-plans the servers of its namespace."""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, VERSION
from ..clients.kube import is_transient
from ..models.kinds import ENVIRONMENT
from .servers import request


def reconcile_or_retry(memo: kopf.Memo, namespace: str) -> None:
    try:
        request(memo.servers, namespace)
    except Exception as exc:
        if is_transient(exc):
            raise kopf.TemporaryError(f"API server unavailable: {type(exc).__name__}", delay=5) from None
        raise


@kopf.on.resume(GROUP, VERSION, ENVIRONMENT.plural)
@kopf.on.create(GROUP, VERSION, ENVIRONMENT.plural)
@kopf.on.update(GROUP, VERSION, ENVIRONMENT.plural)
def environment_changed(namespace: str, memo: kopf.Memo, **_: Any) -> None:
    reconcile_or_retry(memo, namespace)


@kopf.on.event(GROUP, VERSION, ENVIRONMENT.plural)
def environment_deleted(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    # No finalizer: deleting an environment never waits for the operator. The next pass
    # removes a server no environment uses (and garbage collection would too).
    if event.get("type") == "DELETED":
        reconcile_or_retry(memo, namespace)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "flipt-operator"})
def server_deployment_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """The Deployment controller reported progress (or someone edited our Deployment)."""
    if event.get("type") in ("MODIFIED", "DELETED"):
        reconcile_or_retry(memo, namespace)


@kopf.index(GROUP, VERSION, ENVIRONMENT.plural)
def namespaces_with_environments(namespace: str, **_: Any) -> dict[str, bool]:
    return {namespace: True}
