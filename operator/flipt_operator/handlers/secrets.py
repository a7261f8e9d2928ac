"""Secrets are not ours, but what reads them is: a change re-checks the dependents at once.

Only Secrets some FliptStorage or FliptCredential names matter; every other Secret event of the
cluster (Helm releases, service-account tokens, other applications) returns at once. The names
come from kopf indexes kept by the watches of our kinds, so no API call decides it.
"""

from __future__ import annotations

from typing import Any

import kopf

from .. import GROUP, VERSION
from ..models.kinds import STORAGE
from ..rules.references import storage_secret_names
from . import credential
from .metrics import WATCH_EVENTS
from .servers import Scope, request


@kopf.index(GROUP, VERSION, STORAGE.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def storages_by_secret(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, Secret name) -> the storages that name it (database URL, CA bundle, Redis password)."""
    return {(namespace, secret): name for secret in storage_secret_names(spec)}


@kopf.on.event("", "v1", "secrets")  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def secret_event(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    credentials_by_secret: kopf.Index,
    storages_by_secret: kopf.Index,
    **_: Any,
) -> None:
    key = (namespace, name)
    named = key in credentials_by_secret or key in storages_by_secret
    if named or memo.servers.secrets.follows(namespace, name):
        memo.servers.secrets.observe(event)  # before any pass this event asks for reads it
    if not named:
        if event.get("type") is not None:  # a (re-)listing is not a decision worth counting
            WATCH_EVENTS.labels("Secret", "ignored").inc()
        return
    if not memo.servers.listed.changed(event):
        return  # the listing at start (resumed objects cover it), or unchanged in a re-listing
    credential.on_secret_event(memo.servers, namespace, name, credentials_by_secret)
    # Servers mount Secrets or take env from them: a change rolls the pods (config hash), and
    # the rules check the keys a storage or credential names.
    request(memo.servers, namespace, Scope.of(storages=storages_by_secret.get(key, []),
                                              credentials=credentials_by_secret.get(key, [])))
    WATCH_EVENTS.labels("Secret", "pass").inc()
