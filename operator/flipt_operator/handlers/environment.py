"""FliptEnvironment: every change re-plans the servers of its namespace.

Triggers are stateless watch events (kopf `on.event`): kopf keeps no annotations or
finalizers on our objects, the pass itself is idempotent, and `servers.request` retries a
failed pass with backoff. The initial listing at start (event type None) resumes everything.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, VERSION
from ..models.kinds import ENVIRONMENT
from .servers import request


@kopf.on.event(GROUP, VERSION, ENVIRONMENT.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def environment_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if memo.servers.changed(event):
        request(memo.servers, namespace)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "flipt-operator"})  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def server_deployment_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """The Deployment controller reported progress, or someone edited or deleted our Deployment."""
    if memo.servers.listed.changed(event) and memo.servers.changed(event):
        request(memo.servers, namespace)
