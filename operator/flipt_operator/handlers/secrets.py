"""Secrets are not ours, but what reads them is: a change re-checks the dependents at once."""

from __future__ import annotations

from typing import Any

import kopf

from . import credential
from .servers import request


@kopf.on.event("", "v1", "secrets")
def secret_event(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    credentials_by_secret: kopf.Index,
    namespaces_with_environments: kopf.Index,
    **_: Any,
) -> None:
    if not memo.servers.listed.changed(event):
        return  # the listing at start (resumed objects cover it), or unchanged in a re-listing
    credential.on_secret_event(memo.servers, namespace, name, credentials_by_secret)
    if namespace in namespaces_with_environments:
        # Servers mount Secrets or take env from them: a change rolls the pods (config hash).
        request(memo.servers, namespace)
