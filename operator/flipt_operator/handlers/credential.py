"""FliptCredential: validate the referenced Secret; re-validate when the Secret changes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION
from ..builders.status import ConditionSpec, Summary
from ..clients.kube import Kube
from ..models.credential import FliptCredential
from ..models.kinds import CREDENTIAL
from ..rules.credentials import check_credential
from .context import Context
from .metrics import RECONCILE_SECONDS, RECONCILES
from .reporting import object_lock, write_status
from .servers import EVERYTHING, Scope, request

log = logging.getLogger(__name__)
CREDENTIALS_VALID = "CredentialsValid"


def reconcile_credential(kube: Kube, namespace: str, name: str, stored: Callable[[dict[str, Any]], Any] | None = None) -> bool:
    """True when the credential's status changed (servers using it may need re-planning);
    `stored` is given the credential as written."""
    with object_lock(CREDENTIAL, namespace, name), RECONCILE_SECONDS.labels(CREDENTIAL.kind).time():
        body = kube.get(CREDENTIAL, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return False
        try:
            credential = FliptCredential.model_validate(body)
        except ValidationError as exc:
            # The schema should have refused it; say which field anyway.
            message = f"spec is invalid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            RECONCILES.labels(CREDENTIAL.kind, "stalled").inc()
            return write_status(kube, CREDENTIAL, body, summary=Summary("stalled", "InvalidSpec", message),
                                stored=stored)
        secret = kube.get_secret(namespace, credential.spec.secret_ref.name)
        check = check_credential(credential.spec, secret[0] if secret else None)
        summary = Summary("ready", "CredentialsValid", check.message) if check.valid else Summary(
            "stalled", check.reason, check.message
        )
        RECONCILES.labels(CREDENTIAL.kind, "ready" if check.valid else "stalled").inc()
        return write_status(
            kube,
            CREDENTIAL,
            body,
            summary=summary,
            domain=[ConditionSpec(CREDENTIALS_VALID, check.valid, check.reason, check.message)],
            fields={"secretResourceVersion": secret[1] if secret else None},
            stored=stored,
        )


@kopf.index(GROUP, VERSION, CREDENTIAL.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def credentials_by_secret(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, Secret name) -> the credentials that read it."""
    secret = (spec.get("secretRef") or {}).get("name")
    return {(namespace, secret): name} if secret else {}


@kopf.on.event(GROUP, VERSION, CREDENTIAL.plural)  # type: ignore[arg-type]  # kopf's protocol spells out every kwarg
def credential_event(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    seen = memo.servers.objects.observe(event)  # every event: our status writes keep it current
    # A credential's check reads its Secret, which the cache does not hold: always re-checked.
    if memo.servers.changed(event):
        recheck(memo.servers, namespace, name)
    if seen.relisted:
        request(memo.servers, namespace, EVERYTHING)


def recheck(ctx: Context, namespace: str, name: str) -> None:
    """Validate one credential soon, on the check workers (`Context.checks`), and return."""
    ctx.checks.submit(f"{namespace}/{name}", check, ctx, namespace, name)


def check(ctx: Context, namespace: str, name: str) -> None:
    """Validate one credential; when its status changed, re-plan the servers using it (storages
    and servers read its readiness). A failure is retried with backoff, never dropped."""
    try:
        changed = reconcile_credential(ctx.kube, namespace, name, stored=ctx.objects.store_own_write)
    except Exception as exc:  # noqa: BLE001 - retried below, whatever it was
        delay = ctx.backoff.failed(f"{namespace}/{name}")
        log.warning("checking credential %s/%s failed (%s); retrying in %.0fs", namespace, name,
                    type(exc).__name__, delay)
        ctx.retries.schedule(f"{namespace}/{name}", delay, recheck, ctx, namespace, name)
        return
    ctx.backoff.succeeded(f"{namespace}/{name}")
    if changed:
        request(ctx, namespace, Scope.of(credentials=[name]))


def on_secret_event(ctx: Context, namespace: str, name: str, index: kopf.Index) -> None:
    """A Secret changed: re-check every credential that reads it, right away."""
    for credential_name in index.get((namespace, name), []):
        recheck(ctx, namespace, credential_name)
