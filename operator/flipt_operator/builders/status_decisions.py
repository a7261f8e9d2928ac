"""What the status of an environment or storage says, decided from what the reconcile saw.

Pure: inputs are plans, problems, the Deployment's reported status and the sidecars' reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..builders.status import ConditionSpec, Summary
from ..models.plan import Problem
from ..models.storage import FliptStorageSpec, ReplicaSync, SyncStatus
from ..models.sync import StorageSyncState

SERVER_AVAILABLE = "ServerAvailable"
CREDENTIALS_VALID = "CredentialsValid"
SYNCED = "Synced"
CONFLICT = "Conflict"
DATABASE_REACHABLE = "DatabaseReachable"
MIGRATIONS_APPLIED = "MigrationsApplied"
CACHE_READY = "CacheReady"
IMPORTED = "Imported"
DATABASE_CONDITIONS = (DATABASE_REACHABLE, MIGRATIONS_APPLIED, CACHE_READY, IMPORTED)


@dataclass(frozen=True)
class StatusDecision:
    summary: Summary
    domain: list[ConditionSpec] = field(default_factory=list)
    managed: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseReport:
    """What the database lifecycle (handlers/database.py) concluded for one database storage."""

    summary: Summary
    conditions: list[ConditionSpec] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    """status.database in its API form."""


def describe(problem: Problem) -> str:
    return f"{problem.kind} {problem.name} {problem.field}: {problem.message}"


def deployment_availability(deployment: dict[str, Any] | None) -> ConditionSpec:
    """ServerAvailable from the Deployment's status, as the Deployment controller reports it."""
    if deployment is None:
        return ConditionSpec(SERVER_AVAILABLE, False, "DeploymentMissing", "The server's Deployment does not exist yet.")
    status = deployment.get("status") or {}
    generation = deployment["metadata"].get("generation")
    if status.get("observedGeneration") is None or status["observedGeneration"] < (generation or 0):
        return ConditionSpec(SERVER_AVAILABLE, None, "RolloutPending", "Waiting for the Deployment controller.")
    wanted = deployment.get("spec", {}).get("replicas", 1)
    available = status.get("availableReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    if wanted == 0:
        return ConditionSpec(SERVER_AVAILABLE, False, "ScaledToZero", "The server has 0 replicas.")
    if updated >= wanted and available >= wanted:
        return ConditionSpec(SERVER_AVAILABLE, True, "Available", f"{available}/{wanted} replicas available.")
    return ConditionSpec(
        SERVER_AVAILABLE, False, "RollingOut", f"{updated}/{wanted} replicas updated, {available} available."
    )


def environment_status(
    name: str,
    server: str,
    errors: Sequence[Problem],
    warnings: Sequence[Problem],
    availability: ConditionSpec | None,
    storage_backend: str | None,
    revision: str | None,
    config_hash: str | None,
) -> StatusDecision:
    fields = {"server": server, "storageBackend": storage_backend, "revision": revision, "configHash": config_hash}
    faults = [p for p in errors if p.severity != "Pending"]
    if faults:
        own = [p for p in faults if p.kind == "FliptEnvironment" and p.name == name]
        first = (own or faults)[0]
        reason = first.reason if own else "ServerBlocked"
        message = describe(first) if own else f"Server {server} cannot be rendered: {describe(first)}"
        return StatusDecision(Summary("stalled", reason, message), fields=fields)
    if errors:  # only the operator's own work under way holds the server back
        return StatusDecision(Summary("progressing", errors[0].reason,
                                      f"Server {server} waits: {describe(errors[0])}"), fields=fields)
    assert availability is not None
    domain = [availability]
    if availability.status is not True:
        return StatusDecision(
            Summary("progressing", availability.reason, availability.message), domain, (SERVER_AVAILABLE,), fields
        )
    mine = [w for w in warnings if w.name == name and w.kind == "FliptEnvironment"] or list(warnings)
    if mine:
        return StatusDecision(Summary("ready", mine[0].reason, describe(mine[0])), domain, (SERVER_AVAILABLE,), fields)
    return StatusDecision(
        Summary("ready", "Serving", f"Served by {server}: {availability.message}"), domain, (SERVER_AVAILABLE,), fields
    )


def _sync_status(spec: FliptStorageSpec, reports: Sequence[tuple[str, StorageSyncState]]) -> SyncStatus:
    git = spec.git
    assert git is not None
    if not reports:
        return SyncStatus(fetch_policy=git.fetch_policy)
    states = [s for _, s in reports]
    revisions = {s.revision for s in states}
    flipt_revisions = {s.flipt_revision for s in states}
    errors = [s.last_error for s in states if s.last_error]
    conflicts = [s.conflict for s in states if s.conflict]
    fetched = [s.last_fetch_time for s in states if s.last_fetch_time]
    pushed = [s.last_push_time for s in states if s.last_push_time]
    replicas: list[ReplicaSync] = []
    if len(reports) > 1 and (len(revisions) > 1 or len(flipt_revisions) > 1 or errors or conflicts):
        replicas = [
            ReplicaSync(pod=pod, revision=s.revision, flipt_revision=s.flipt_revision, last_fetch_time=s.last_fetch_time,
                        last_error=s.last_error, conflict=s.conflict)
            for pod, s in sorted(reports, key=lambda r: r[0])
        ]
    return SyncStatus(
        revision=states[0].revision if len(revisions) == 1 else None,
        remote_revision=max((s.remote_revision for s in states if s.remote_revision), default=None,
                            key=lambda r: r or ""),
        flipt_revision=states[0].flipt_revision if len(flipt_revisions) == 1 else None,
        last_fetch_time=min(fetched) if fetched else None,
        last_push_time=max(pushed) if pushed else None,
        fetch_policy=git.fetch_policy,
        last_error=errors[0] if errors else None,
        degraded=any(s.degraded for s in states),
        conflict=conflicts[0] if conflicts else None,
        replicas=replicas,
    )


def _unchanged_sync(previous: dict[str, Any], domain: list[ConditionSpec], managed: tuple[str, ...],
                    fields: dict[str, Any]) -> StatusDecision:
    """The sync part of the status exactly as it stands."""
    old = {c["type"]: c for c in previous.get("conditions") or []}
    for type_ in (CONFLICT, SYNCED):
        if type_ in old:
            c = old[type_]
            status = {"True": True, "False": False}.get(c["status"])
            domain.append(ConditionSpec(type_, status, c["reason"], c.get("message", "")))
    fields["sync"] = previous["sync"]
    ready = old.get("Ready")
    if ready is None:
        summary = Summary("progressing", "AwaitingSyncReport", "Waiting for the sidecars' first report.")
    elif ready["status"] == "True":
        summary = Summary("ready", ready["reason"], ready.get("message", ""))
    else:
        summary = Summary("retrying", ready["reason"], ready.get("message", ""))
    return StatusDecision(summary, domain, managed, fields)


def storage_status(
    name: str,
    spec: FliptStorageSpec,
    errors: Sequence[Problem],
    warnings: Sequence[Problem],
    servers: Sequence[str],
    credential_ready: bool | None,
    reports: Sequence[tuple[str, StorageSyncState]] | None,
    database: DatabaseReport | None = None,
    previous: dict[str, Any] | None = None,
    credential_pending: bool = False,
) -> StatusDecision:
    """`credential_ready`: None without a credentialRef; `credential_pending`: it exists but has
    not been checked yet (neither ready nor a fault). `reports`: (pod, state) from the sidecars,
    None when they have not been read yet (after a restart): then `previous` (the status as it
    stands) keeps its sync state rather than forgetting it.
    `database`: the database lifecycle's report, when a server uses this database storage."""
    fields: dict[str, Any] = {"backend": spec.backend, "server": ", ".join(servers) or None}
    managed = (CREDENTIALS_VALID, SYNCED, CONFLICT, *DATABASE_CONDITIONS)
    domain: list[ConditionSpec] = []
    if spec.git is not None and spec.git.credential_ref is not None:
        ref = spec.git.credential_ref.name
        if credential_ready:
            domain.append(ConditionSpec(CREDENTIALS_VALID, True, "CredentialReady", f"FliptCredential {ref} is Ready."))
        elif credential_pending:
            domain.append(ConditionSpec(CREDENTIALS_VALID, None, "CredentialPending",
                                        f"FliptCredential {ref} has not been checked yet."))
        else:
            domain.append(ConditionSpec(CREDENTIALS_VALID, False, "CredentialNotReady",
                                        f"FliptCredential {ref} is missing or not Ready: see its status."))
    own = [p for p in errors if p.kind == "FliptStorage" and p.name == name]
    faults = [p for p in own if p.severity != "Pending"]
    if faults:
        return StatusDecision(Summary("stalled", faults[0].reason, describe(faults[0])), domain, managed, fields)
    if own:
        return StatusDecision(Summary("progressing", own[0].reason, describe(own[0])), domain, managed, fields)

    if database is not None:
        fields["database"] = database.fields
        note = [w for w in warnings if w.name == name]
        summary = database.summary
        if summary.phase == "ready" and note:
            summary = Summary("ready", note[0].reason, describe(note[0]))
        return StatusDecision(summary, [*domain, *database.conditions], managed, fields)

    if spec.git is None:
        note = [w for w in warnings if w.name == name]
        if note:
            return StatusDecision(Summary("ready", note[0].reason, describe(note[0])), domain, managed, fields)
        used = f"used by {fields['server']}" if servers else "not used by any environment"
        return StatusDecision(Summary("ready", "Valid", f"{spec.backend} storage, {used}."), domain, managed, fields)

    if reports is None and previous and previous.get("sync"):
        return _unchanged_sync(previous, domain, managed, fields)
    reports = reports or []
    sync = _sync_status(spec, reports)
    fields["sync"] = sync.to_api()
    if not reports:
        domain.append(ConditionSpec(SYNCED, None, "NoSidecarReport",
                                    "No git-sync sidecar has reported yet." if servers else
                                    "No environment uses this storage, so nothing syncs it."))
        return StatusDecision(Summary("ready", "Valid", "Configuration valid; waiting for the first sync report."),
                              domain, managed, fields)
    conflict_text = None
    if sync.conflict:
        c = sync.conflict
        conflict_text = (f"A write of Flipt's ({c.local_revision[:12]}) was refused: upstream is at "
                         f"{c.remote_revision[:12]} ({', '.join(c.files) or 'no file'}); Flipt reported the "
                         "error to its caller and nothing was pushed.")
        domain.append(ConditionSpec(CONFLICT, True, "WriteRefused", conflict_text))
    else:
        domain.append(ConditionSpec(CONFLICT, False, "NoConflict", "No write of Flipt's was refused."))
    states = [s for _, s in reports]
    at_head = all(s.revision and s.revision == s.remote_revision for s in states)
    # The sidecar applies the fetch policy itself: a strict storage that cannot fetch is not
    # ready, a lenient one is degraded. (lastError alone may carry a conflict, not a fetch error.)
    failing = [s.last_error for s in states if s.last_error and (not s.ready or s.degraded)]
    if failing:
        domain.append(ConditionSpec(SYNCED, False, "FetchFailed", failing[0]))
        if spec.git.fetch_policy == "strict":
            return StatusDecision(Summary("retrying", "FetchFailed", failing[0]), domain, managed, fields)
        served = sync.revision or "the last good state"
        return StatusDecision(
            Summary("ready", "Degraded", f"Serving {served[:12]} (lenient) while fetches fail: {failing[0]}"),
            domain, managed, fields,
        )
    if conflict_text:
        domain.append(ConditionSpec(SYNCED, False, "Conflict", conflict_text))
        return StatusDecision(Summary("ready", "Conflict", conflict_text), domain, managed, fields)
    if at_head:
        domain.append(ConditionSpec(SYNCED, True, "Synced", f"Every replica serves {sync.revision}."))
    else:
        domain.append(ConditionSpec(SYNCED, False, "Behind", "Not every replica serves the remote head yet."))
    return StatusDecision(Summary("ready", "Synced" if at_head else "Syncing",
                                  f"Serving {sync.revision or 'nothing yet'}."), domain, managed, fields)
