"""FliptEnvironment: a change re-plans the server it names (and the one it named before).

Triggers are stateless watch events (kopf `on.event`): kopf keeps no annotations or
finalizers on our objects, the pass itself is idempotent, and `servers.request` retries a
failed pass with backoff. The initial listing at start (event type None) resumes everything.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, VERSION
from ..models.kinds import ENVIRONMENT
from .servers import EVERYTHING, INSTANCE_LABEL, Scope, request
from .watched import environment_server, environment_storage


@kopf.on.event(GROUP, VERSION, ENVIRONMENT.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def environment_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    seen = memo.servers.objects.observe(event)  # every event: our status writes keep it current
    changed = memo.servers.changed(event)
    if seen.relisted:
        request(memo.servers, namespace, EVERYTHING)
    elif changed and not seen.known:
        # The server and storage it names now, and those it named (which may have lost it).
        before, after = seen.before, event.get("object")
        request(memo.servers, namespace, Scope.of(servers=[environment_server(before), environment_server(after)],
                                                  storages=[environment_storage(before), environment_storage(after)]))


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "flipt-operator"})  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def server_deployment_event(event: kopf.RawEvent, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """The Deployment controller reported progress, or someone edited or deleted our Deployment."""
    if memo.servers.listed.changed(event) and memo.servers.changed(event):
        labels = ((event.get("object") or {}).get("metadata") or {}).get("labels") or {}
        request(memo.servers, namespace, Scope.of(servers=[labels.get(INSTANCE_LABEL)]))
